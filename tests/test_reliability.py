"""Interrupted work resumes; bad input gets a clear error and leaves nothing half-written."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch

from esol.cli import main as esol_main
from esol.infra.io import InputError
from esol.training import checkpoint

from .conftest import REPO, smoke_params_dict
from .pipeline_project import env, make_project, run

# --- bad input -------------------------------------------------------------------------------


@pytest.fixture
def dataset_copy(smoke_dataset, tmp_path):
    root = tmp_path / "dataset"
    shutil.copytree(smoke_dataset.root, root)
    return root


@pytest.fixture
def params_file(tmp_path):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict()))
    return path


def esol(*args) -> int:
    return esol_main([str(a) for a in args])


def assert_refused(code, capsys, culprit, outputs) -> str:
    assert code != 0
    text = capsys.readouterr().err
    assert culprit in text, text
    for path in outputs:
        assert not path.exists(), f"{path} was written despite the error"
    return text


def fake_cams(dataset_root, out):
    """CAM files as make_cam writes them, from the ground truth (no model needed)."""
    from esol.data.layout import Dataset
    from esol.inference.cams import save_cam

    ds = Dataset(dataset_root)
    out.mkdir(parents=True)
    for image_id in ds.ids("train"):
        keys = np.array(ds.labels(image_id), dtype=np.int64)
        mask = ds.mask(image_id)
        cams = (
            np.stack([(mask == k).astype(np.uint8) * 255 for k in keys])
            if len(keys)
            else np.zeros((0, *mask.shape), np.uint8)
        )
        save_cam(out / f"{image_id}.npz", keys, cams)


def test_corrupt_image_is_named(dataset_copy, params_file, tmp_path, capsys, smoke_dataset):
    image_id = smoke_dataset.ids("train")[3]
    (dataset_copy / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    fake_cams(dataset_copy, tmp_path / "cams")
    out = tmp_path / "labels"
    code = esol(
        "refine_crf",
        "--params",
        params_file,
        "--data",
        dataset_copy,
        "--cams",
        tmp_path / "cams",
        "--split",
        "train",
        "--out-dir",
        out,
    )
    assert_refused(code, capsys, f"{image_id}.jpg: cannot decode image", [out])


def test_missing_mask_is_named(dataset_copy, params_file, tmp_path, capsys, smoke_dataset):
    fake_cams(dataset_copy, tmp_path / "cams")
    image_id = smoke_dataset.ids("train")[5]
    (dataset_copy / "SegmentationClass" / f"{image_id}.png").unlink()
    metrics = tmp_path / "seeds.json"
    code = esol(
        "eval_seeds",
        "--params",
        params_file,
        "--data",
        dataset_copy,
        "--cams",
        tmp_path / "cams",
        "--variant",
        "cam",
        "--metrics",
        metrics,
        "--curve",
        tmp_path / "curve.csv",
    )
    assert_refused(code, capsys, f"{image_id}.png: mask not found", [metrics, tmp_path / "curve.csv"])


def test_mask_with_out_of_range_class_is_named(dataset_copy, params_file, tmp_path, capsys, smoke_dataset):
    from esol.infra.io import write_label_png

    fake_cams(dataset_copy, tmp_path / "cams")
    image_id = smoke_dataset.ids("train")[0]
    mask = smoke_dataset.mask(image_id)
    mask[0, 0] = 9
    write_label_png(dataset_copy / "SegmentationClass" / f"{image_id}.png", mask)
    metrics = tmp_path / "seeds.json"
    code = esol(
        "eval_seeds",
        "--params",
        params_file,
        "--data",
        dataset_copy,
        "--cams",
        tmp_path / "cams",
        "--variant",
        "cam",
        "--metrics",
        metrics,
        "--curve",
        tmp_path / "curve.csv",
    )
    text = assert_refused(code, capsys, "class id(s) [9] outside 0..3", [metrics])
    assert f"{image_id}.png" in text


def test_label_naming_an_unknown_class_is_named(dataset_copy, params_file, tmp_path, capsys, smoke_dataset):
    labels = json.loads((dataset_copy / "cls_labels.json").read_text())
    image_id = smoke_dataset.ids("train_aug")[2]
    labels[image_id] = [1, 7]
    (dataset_copy / "cls_labels.json").write_text(json.dumps(labels))
    out = tmp_path / "model.pt"
    code = esol(
        "train_cam",
        "--params",
        params_file,
        "--data",
        dataset_copy,
        "--out-model",
        out,
        "--metrics",
        tmp_path / "m.json",
        "--live-dir",
        tmp_path / "live",
        "--checkpoint-dir",
        tmp_path / "ck",
    )
    assert_refused(code, capsys, f"image {image_id} lists class id(s) [7] absent from the class list", [out])


def test_checkpoint_of_another_architecture_is_named(dataset_copy, params_file, tmp_path, capsys):
    from dataclasses import replace

    from esol.infra.config import load_params
    from esol.method.model import ESOLNet

    params = load_params(params_file)
    other = ESOLNet(replace(params.model, width=8), 3)
    bad = tmp_path / "other.pt"
    checkpoint.save(bad, {"model": other.state_dict()})
    out = tmp_path / "cams"
    code = esol(
        "make_cam",
        "--params",
        params_file,
        "--data",
        dataset_copy,
        "--model",
        bad,
        "--split",
        "train",
        "--out-dir",
        out,
    )
    text = assert_refused(code, capsys, "checkpoint is from a different architecture", [out])
    assert "other.pt" in text and "shape mismatch" in text


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"model": _Exploit(str(marker))}, handle)
    torch.save({"model": _Exploit(str(marker))}, evil)
    with pytest.raises(InputError, match="refused to load"):
        checkpoint.safe_load(evil)
    assert not marker.exists()


def test_cli_exit_status_is_nonzero_on_bad_input(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "esol",
            "eval_seeds",
            "--data",
            str(tmp_path / "nowhere"),
            "--cams",
            str(tmp_path),
            "--variant",
            "cam",
            "--metrics",
            str(tmp_path / "m.json"),
            "--curve",
            str(tmp_path / "c.csv"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "nowhere/meta.json: file not found" in result.stderr


# --- interruption ---------------------------------------------------------------------------


def _step_processes(root, step):
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["cwd"] == str(root) and "esol" in " ".join(cmd) and step in cmd:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _kill_when(root, step, ready, timeout=600):
    """Start snakemake, SIGKILL the ``step`` job once ``ready()`` holds; return snakemake's result."""
    proc = subprocess.Popen(
        ["snakemake", "--cores", "2", "--rerun-incomplete"],
        cwd=root,
        env=env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + timeout
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if ready():
            for victim in _step_processes(root, step):
                os.kill(victim.pid, signal.SIGKILL)
                killed = True
            if killed:
                break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=timeout)
    assert killed, f"{step} was never caught in flight:\n{out[-3000:]}"
    assert proc.returncode != 0
    return out


@pytest.mark.slow
def test_killed_steps_resume_and_match_an_uninterrupted_run(tmp_path, smoke_project):
    _, reference = smoke_project
    root = make_project(tmp_path / "esol")
    ck = root / "results/checkpoints/train_cam/last.pt"

    def train_cam_has_epochs(n):
        if not ck.is_file():
            return False
        try:
            return checkpoint.safe_load(ck)["epoch"] >= n - 1
        except Exception:
            return False

    _kill_when(root, "train_cam", lambda: train_cam_has_epochs(3))
    assert not (root / "results/models/cam.pt").exists()
    partial_cams = root / "results/cams/esol.partial"
    _kill_when(root, "make_cam", lambda: partial_cams.is_dir() and len(list(partial_cams.glob("*.npz"))) >= 8)
    partial_labels = root / "results/pseudo_labels/esol.partial"
    _kill_when(root, "refine_crf", lambda: partial_labels.is_dir() and len(list(partial_labels.glob("*.png"))) >= 8)
    run(root, "snakemake", "--cores", "2", "--rerun-incomplete")

    train_log = (root / "logs/train_cam.log").read_text()
    assert "resuming after epoch" in train_log
    assert "already done" in (root / "logs/make_cam_esol.log").read_text()
    for name, expected in reference.items():
        got = json.loads((root / "results/metrics" / f"{name}.json").read_text())
        assert got == expected, f"{name}.json differs from the uninterrupted run"


def test_partial_work_from_other_settings_is_discarded(tmp_path):
    from esol.infra.io import atomic_dir

    out = tmp_path / "cams"
    with pytest.raises(RuntimeError), atomic_dir(out, "settings-a") as partial:
        (partial / "img1.npz").write_text("done with a")
        raise RuntimeError("killed")
    with atomic_dir(out, "settings-a") as partial:
        assert (partial / "img1.npz").is_file()  # same settings: resumed
    assert (out / "img1.npz").is_file() and not (out / ".fingerprint").exists()
    with pytest.raises(RuntimeError), atomic_dir(out, "settings-a") as partial:
        (partial / "img2.npz").write_text("done with a")
        raise RuntimeError("killed")
    with atomic_dir(out, "settings-b") as partial:
        assert not (partial / "img2.npz").exists()  # other settings: started afresh
