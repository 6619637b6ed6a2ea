"""Every relative link in README.md and docs/*.md points at a file that exists, and every
``#anchor`` into a Markdown file at one of its headings (GitHub's heading slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documentation_files(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def heading_anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated slug gets -1, -2, ... as on GitHub."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        seen = counts.get(slug, 0)
        counts[slug] = seen + 1
        anchors.add(slug if seen == 0 else f"{slug}-{seen}")
    return anchors


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """``file:line: target (why)`` for each relative link of ``path`` that does not resolve."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if SCHEME.match(target) or target.startswith("//"):
                continue  # a web address or mail link: not checked here
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not resolved.is_relative_to(root.resolve()):
                problems.append(f"{where} (points outside the repository)")
            elif not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                problems.append(f"{where} (no heading with anchor #{anchor} in {resolved.name})")
    return problems


@pytest.mark.parametrize("doc", documentation_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    assert doc.is_file(), doc
    problems = broken_links(doc)
    assert not problems, "\n".join(problems)


def test_readme_stays_a_manual_of_at_most_300_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300
    first_block = "\n".join(lines[:6])
    assert "make run" in first_block and "make test" in first_block


def test_github_slugs_match_githubs_rules():
    assert github_slug("The first default: the clip from stage 0 (`clip_from: cam`)") == (
        "the-first-default-the-clip-from-stage-0-clip_from-cam"
    )
    assert github_slug("Mean ± std over seeds") == "mean--std-over-seeds"
    assert github_slug("Runs a0 to c2 (seed 0)") == "runs-a0-to-c2-seed-0"
    assert github_slug("See [the guide](guide.md)") == "see-the-guide"


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Install it\n\n## Install it\n", encoding="utf-8")
    (tmp_path / "docs" / "figure.png").write_bytes(b"")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [the guide](docs/guide.md#install-it), [again](docs/guide.md#install-it-1),\n"
        "![a figure](docs/figure.png), [the web](https://example.org/x.md) and [here](#top).\n"
        "# Top\n"
        "Broken: [gone](docs/missing.md), ![no image](docs/none.png), [bad anchor](docs/guide.md#uninstall),\n"
        "[outside](../elsewhere.md). Not links: `[code](nowhere.md)`.\n"
        "```\n[in a fence](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(readme, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/missing.md (no such file)",
        "docs/none.png (no such file)",
        "docs/guide.md#uninstall (no heading with anchor #uninstall in guide.md)",
        "../elsewhere.md (points outside the repository)",
    ]
