"""IRN: affinity labels, the random walk, make_sem_seg and a resumable train_irn."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from esol.inference.cams import quantise, save_cam
from esol.infra.config import params_from_dict
from esol.infra.io import IGNORE_LABEL, read_label_png, write_label_png
from esol.refine.affinity import affinity_labels, downsample_labels, pair_offsets, path_affinity
from esol.refine.random_walk import (
    random_walk,
    sparse_transition,
    walk_to_mask,
)
from esol.training import checkpoint

from .conftest import REPO, smoke_params_dict

U = IGNORE_LABEL


def test_pair_offsets_are_the_half_disc_within_the_radius():
    pairs = pair_offsets(2)
    assert pairs.offsets == ((0, 1), (1, -1), (1, 0), (1, 1))
    assert set(pairs.paths[2]) == {(0, 0), (1, 0)}
    assert len(pair_offsets(10)) == 152  # (317 points with |d| < 10, less the centre) / 2


def test_affinity_labels_from_a_hand_made_label_map():
    label = torch.tensor(
        [
            [0, 0, 1, 1],
            [0, U, 1, 1],
            [0, 0, 2, 2],
        ]
    )
    pairs = pair_offsets(2)
    got = affinity_labels(label, pairs)
    right = pairs.offsets.index((0, 1))
    # Pairs (p, p + (0, 1)): row 0: bg-bg, bg-fg(1), fg-fg; row 1: bg-255, 255-fg, fg-fg; row 2: bg-bg, bg-fg(2), fg-fg.
    assert got.bg_pos[right].tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert got.fg_pos[right].tolist() == [[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]]
    assert got.neg[right].tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    down = pairs.offsets.index((1, 0))
    # Pairs (p, p + (1, 0)): class 1 over class 2 is negative; anything touching 255 is ignored.
    assert got.neg[down].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert got.bg_pos[down].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert got.fg_pos[down].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    # Every pair is in at most one class; pairs leaving the map (last row, last column) in none.
    counts = got.bg_pos.int() + got.fg_pos.int() + got.neg.int()
    assert counts.max() == 1
    assert counts[down, 2].sum() == 0 and counts[right, :, 3].sum() == 0


def test_labels_go_to_the_stride_grid_by_their_cell_centres():
    label = np.arange(10 * 6, dtype=np.uint8).reshape(10, 6)
    grid = downsample_labels(label, 4)
    assert grid.shape == (3, 2)
    assert grid[0, 0] == label[2, 2] and grid[2, 1] == label[9, 5]  # the last cells clamp to the edge


def dense_affinity(boundary: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """IRN's dense A, pair by pair: (1 - max boundary on the path) ** beta within the radius, 1 on the diagonal."""
    h, w = boundary.shape
    pairs = pair_offsets(radius)
    scaled = path_affinity(boundary, pairs).clamp(min=0) ** beta
    matrix = torch.eye(h * w)
    for k, (dy, dx) in enumerate(pairs.offsets):
        for y in range(h):
            for x in range(w):
                if y + dy < h and 0 <= x + dx < w:
                    i, j = y * w + x, (y + dy) * w + x + dx
                    matrix[i, j] = matrix[j, i] = scaled[k, y, x]
    return matrix


def test_the_sparse_walk_is_irns_dense_matrix_power():
    boundary = torch.rand(6, 7, generator=torch.Generator().manual_seed(0))
    affinity = dense_affinity(boundary, 3, beta=10)
    transition = sparse_transition(boundary, pair_offsets(3), beta=10).to_dense()
    assert torch.all(transition >= 0)
    assert torch.allclose(transition.sum(dim=1), torch.ones(42))
    assert not torch.allclose(transition.sum(dim=0), torch.ones(42))  # rows, not columns
    assert torch.allclose(transition, affinity / affinity.sum(dim=1, keepdim=True), atol=1e-6)
    scores = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(1))
    power = torch.linalg.matrix_power(transition.double(), 2**4)  # IRN squares T exp_times = 4 times
    expected = ((scores * (1 - boundary)).reshape(2, 42).double() @ power.T).reshape(2, 6, 7)
    walked = random_walk(scores, boundary, pair_offsets(3), beta=10, exp_times=4)
    assert torch.allclose(walked.double(), expected, atol=1e-5)


def test_the_walk_spreads_a_seed_inside_its_region_and_stops_at_a_boundary():
    boundary = torch.full((12, 16), 0.02)
    boundary[:, 8] = 0.99  # a predicted boundary splits the map into two regions
    seed = torch.zeros(1, 12, 16)
    seed[0, 3, 2] = 1.0
    walked = random_walk(seed, boundary, pair_offsets(5), beta=10, exp_times=8)[0]
    left, right = walked[:, :8], walked[:, 9:]
    assert left.min() > 0.5 * left.max()  # spread over the whole region
    assert right.max() < 1e-3 * left.min()  # and not across the boundary
    mask = walk_to_mask(walked[None], np.array([3]), (48, 64), bg_threshold=0.25)
    assert mask.shape == (48, 64)
    assert np.all(mask[:, :30] == 3) and np.all(mask[:, 36:] == 0)


def _tiny_params(tmp_path, **overrides):
    raw = smoke_params_dict()
    raw["synthetic"].update(image_size=66, num_train_aug=2, num_train=2, num_val=1)
    raw["train_irn"].update(epochs=1, batch_size=2, crop_size=64, radius=5)
    for section, values in overrides.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return raw, path


def test_make_sem_seg_on_two_images_writes_masks_of_image_size(tmp_path):
    from esol.data.layout import Dataset
    from esol.data.synthetic import generate
    from esol.refine.irn import build_irn
    from esol.steps import make_sem_seg

    raw, _ = _tiny_params(tmp_path)
    params = params_from_dict(raw)
    root = tmp_path / "dataset"
    generate(root, params.synthetic, params.dataset.seed)
    dataset = Dataset(root)
    ids = dataset.ids("train")
    assert len(ids) == 2
    cams = tmp_path / "cams"
    for image_id in ids:
        keys = np.asarray(dataset.labels(image_id), dtype=np.int64)
        gt = dataset.mask(image_id)
        planes = np.stack([(gt == k).astype(np.float32) for k in range(1, dataset.num_classes)])
        save_cam(cams / f"{image_id}.npz", keys, quantise(planes, keys))
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "irn.pt", {"model": build_irn(params.model, True).state_dict()})
    out = tmp_path / "masks"
    make_sem_seg.run(params, data=root, cams=cams, model=tmp_path / "irn.pt", split="train", out_dir=out)
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(ids)
    for image_id in ids:
        mask = read_label_png(out / f"{image_id}.png", dataset.num_classes)
        assert mask.shape == (66, 66)
        assert IGNORE_LABEL not in mask  # no uncertain band
        assert set(np.unique(mask)) <= {0, *dataset.labels(image_id)}


def _train_irn_command(params_path, data, labels, out):
    return [
        sys.executable,
        "-m",
        "esol",
        "--log",
        str(out / "train_irn.log"),
        "train_irn",
        "--params",
        str(params_path),
        "--data",
        str(data),
        "--labels",
        str(labels),
        "--split",
        "train",
        "--out-model",
        str(out / "irn.pt"),
        "--metrics",
        str(out / "irn.json"),
        "--live-dir",
        str(out / "live"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
    ]


def test_train_irn_resumes_after_sigkill_with_the_same_result(smoke_dataset, tmp_path):
    raw = smoke_params_dict()
    raw["train_irn"].update(epochs=4, batch_size=8, crop_size=64, radius=5)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    labels = tmp_path / "ir_labels"
    rng = np.random.default_rng(0)
    for image_id in smoke_dataset.ids("train"):
        label = smoke_dataset.mask(image_id).copy()
        label[rng.random(label.shape) < 0.2] = IGNORE_LABEL  # an uncertain band, as the CRF step leaves
        write_label_png(labels / f"{image_id}.png", label)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}

    reference = tmp_path / "reference"
    subprocess.run(_train_irn_command(params_path, smoke_dataset.root, labels, reference), env=env, check=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_irn_command(params_path, smoke_dataset.root, labels, killed), env=env)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"train_irn was not caught in flight (exit {proc.returncode})")
    assert not (killed / "irn.pt").exists()
    assert checkpoint.safe_load(last)["epoch"] < 3
    subprocess.run(_train_irn_command(params_path, smoke_dataset.root, labels, killed), env=env, check=True)
    assert "resuming after epoch" in (killed / "train_irn.log").read_text()

    want = checkpoint.safe_load(reference / "irn.pt")["model"]
    got = checkpoint.safe_load(killed / "irn.pt")["model"]
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert (reference / "irn.json").read_text() == (killed / "irn.json").read_text()


def test_ablation_gains_the_pseudo_mask_scores_of_both_refinements(tmp_path):
    import json

    from esol.steps.summarize import ablation_table

    from .test_study import seeds_file

    seeds = [seeds_file(tmp_path, v, (0.3, 60.0, 50.0, 40.0), [(0.1, 40.0, 70.0, 35.0)]) for v in ("cam", "esol")]
    pseudo = []
    for name, miou in (("cam", 50.0), ("esol", 52.0), ("cam_irn", 58.0), ("esol_irn", 61.0)):
        path = tmp_path / f"pl_{name}.json"
        path.write_text(json.dumps({"variant": name, "miou": miou, "precision": miou + 10, "recall": miou + 20}))
        pseudo.append(path)
    table = ablation_table(seeds, pseudo).set_index("variant")
    assert table.loc["esol", "pseudo_label_miou"] == 52.0
    assert table.loc["esol", "pseudo_label_recall"] == 72.0
    assert table.loc["esol", "irn_mask_miou"] == 61.0
    assert table.loc["cam", "irn_mask_precision"] == 68.0
    assert list(table.index) == ["cam", "esol"]  # the IRN metrics add columns, not rows


def test_plot_refinement_draws_one_figure_per_sample(smoke_dataset, smoke_params, tmp_path):
    from esol.steps import plot_refinement

    ids = smoke_dataset.ids("train")[:2]
    dirs = {name: tmp_path / name for name in ("cams", "ir", "irn")}
    for image_id in ids:
        gt = smoke_dataset.mask(image_id)
        keys = np.asarray(smoke_dataset.labels(image_id), dtype=np.int64)
        planes = np.stack([(gt == k).astype(np.float32) for k in range(1, smoke_dataset.num_classes)])
        save_cam(dirs["cams"] / f"{image_id}.npz", keys, quantise(planes, keys))
        write_label_png(dirs["ir"] / f"{image_id}.png", np.where(gt > 0, U, 0).astype(np.uint8))
        write_label_png(dirs["irn"] / f"{image_id}.png", gt)
    out = tmp_path / "figures"
    plot_refinement.run(
        smoke_params,
        data=smoke_dataset.root,
        cams=[dirs["cams"]],
        ir_labels=[dirs["ir"]],
        irn_masks=[dirs["irn"]],
        out_dir=out,
        count=2,
    )
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(ids)


def test_the_recipes_irn_is_a_frozen_resnet50_with_outputs_on_the_stride_4_grid():
    """voc12 recipe: ResNet-50 (here without downloading weights), frozen; the branches train."""
    import dataclasses

    from esol.refine.irn import build_irn, irn_losses

    raw = smoke_params_dict()
    raw["dataset"]["name"] = "voc12"
    params = params_from_dict(raw)
    assert params.model.backbone == "resnet50" and params.train_irn.radius == 10
    assert not params.train_irn.train_backbone
    model = build_irn(dataclasses.replace(params.model, pretrained=False), params.train_irn.train_backbone)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    edge_params, dp_params = model.branch_parameters()
    assert all(p.requires_grad for p in edge_params + dp_params)
    model.train()
    assert not model.backbone.training  # BatchNorm statistics stay at their ImageNet values
    edge, displacement = model(torch.randn(2, 3, 70, 90))
    assert edge.shape == (2, 1, 18, 23) and displacement.shape == (2, 2, 18, 23)
    labels = torch.randint(0, 3, (2, 18, 23))
    losses = irn_losses(edge, displacement, labels, pair_offsets(params.train_irn.radius))
    losses.total.backward()
    assert all(p.grad is not None for p in edge_params)
    assert all(p.grad is None for p in model.backbone.parameters())
