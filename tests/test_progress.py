"""Progress bars: tqdm on a terminal, plain rate-limited lines in a log file."""

from __future__ import annotations

import io


def test_progress_in_a_log_file_is_one_line_per_update(monkeypatch):
    from esol.infra import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    stream = io.StringIO()
    bar = progress.tqdm(total=5, desc="CAMs esol", file=stream, mininterval=0)
    for _ in range(5):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("CAMs esol:   0%") and "5/5" in lines[-1]
    assert len(lines) == len(set(lines)) <= 7


def test_progress_in_a_log_file_is_rate_limited():
    from esol.infra import progress

    stream = io.StringIO()
    for _ in progress.tqdm(range(10_000), desc="fast", file=stream, mininterval=0.01):
        pass
    lines = stream.getvalue().splitlines()
    assert len(lines) <= 3, lines  # start and end: LOG_INTERVAL (30 s) never elapsed
    assert "10000/10000" in lines[-1]


def test_progress_on_a_terminal_is_tqdm_as_usual():
    from esol.infra import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = progress.tqdm(total=3, file=stream, mininterval=0)
    for _ in range(3):
        bar.update()
    bar.close()
    assert "\r" in stream.getvalue()  # redrawn in place


def test_a_short_transient_bar_writes_nothing_to_a_log_file():
    from esol.infra import progress

    stream = io.StringIO()
    for _ in progress.tqdm(range(100), desc="epoch 1/10", file=stream, leave=False):
        pass
    assert stream.getvalue() == ""
