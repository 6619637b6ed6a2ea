"""Test doubles for the real datasets: a local HTTP file server with scripted faults, and tiny
archives built in the exact layouts of the real VOC 2012, SBD and COCO 2014 downloads."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from esol.data.download import RemoteFile
from esol.infra.io import voc_palette


class FileServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1, with ``Range`` support.

    Faults: paths in ``not_found`` answer 404; ``cut_after[path] = n`` sends the full headers but
    only ``n`` body bytes of the next response, then closes the connection (once); paths in
    ``ignore_range`` answer 200 with the whole file even to a Range request. ``requests`` records
    ``(path, Range header or None)`` of every request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.not_found: set[str] = set()
        self.ignore_range: set[str] = set()
        self.cut_after: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path, rng = self.path, self.headers.get("Range")
                with server.lock:
                    server.requests.append((path, rng))
                    cut = server.cut_after.pop(path, None)
                if path in server.not_found or path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if match and path not in server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> FileServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def remote(
        self,
        filename: str,
        data: bytes,
        *,
        mirrors: tuple[str, ...] = ("/m1",),
        sha256: bool = False,
        size: bool = True,
    ) -> RemoteFile:
        """Serve ``data`` under every mirror prefix; return a RemoteFile with its real checksums."""
        urls = tuple(self.serve(f"{m}/{filename}", data) for m in mirrors)
        return RemoteFile(
            filename,
            urls=urls,
            md5=hashlib.md5(data).hexdigest(),
            size=len(data) if size else None,
            sha256=hashlib.sha256(data).hexdigest() if sha256 else None,
        )


# ---------------------------------------------------------------------------------------- archives


def jpeg_bytes(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def palette_png_bytes(label: np.ndarray) -> bytes:
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def voc_xml(image_id: str, objects: list[tuple[str, int]]) -> bytes:
    """A VOC annotation with ``(class name, difficult)`` objects."""
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>1</truncated><difficult>{difficult}</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        for name, difficult in objects
    )
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
        f"<size><width>16</width><height>12</height><depth>3</depth></size><segmented>1</segmented>{objs}"
        "</annotation>"
    ).encode()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            add_bytes(tar, name, data)
    return buf.getvalue()


def mat_bytes(label: np.ndarray) -> bytes:
    """An SBD ``cls/<id>.mat``: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    buf = io.BytesIO()
    present = np.unique(label[(label > 0) & (label < 255)]).astype(np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for i in range(20):
        boundaries[i, 0] = np.zeros(label.shape, dtype=np.uint8)
    scipy.io.savemat(
        buf, {"GTcls": {"Segmentation": label.astype(np.uint8), "Boundaries": boundaries, "CategoriesPresent": present}}
    )
    return buf.getvalue()


def box_label(h: int, w: int, cls: int, box: tuple[int, int, int, int], border: bool) -> np.ndarray:
    """Background with one ``cls`` rectangle (y0, x0, y1, x1); a 255 ring around it when ``border``."""
    y0, x0, y1, x1 = box
    label = np.zeros((h, w), dtype=np.uint8)
    if border:
        label[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = 255
    label[y0:y1, x0:x1] = cls
    return label


# VOC fixture: (class of the mask, extra difficult class in the XML only or None)
VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033"]
SBD_TRAIN = ["2007_000033", "2008_000002", "2008_000003"]  # 2007_000033 is VOC val: excluded from train_aug
SBD_VAL = ["2007_000039", "2008_000004"]  # 2007_000039 has a VOC mask, which wins over SBD's
TRAIN_AUG = sorted(["2007_000032", "2007_000039", "2008_000002", "2008_000003", "2008_000004"])
VOC_OBJECTS = {
    "2007_000032": (1, "person"),  # (mask class, difficult class listed in the XML only)
    "2007_000039": (19, None),
    "2007_000033": (12, "cat"),
    "2008_000002": (7, None),
    "2008_000003": (15, "bottle"),
    "2008_000004": (20, None),
    "2012_000001": (3, None),  # in JPEGImages only, like the 14k test-ish images of the real tar
}
VOC_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_expected() -> dict[str, tuple[list[int], np.ndarray]]:
    """Image id -> (image-level labels, mask) the preparation must produce."""
    expected = {}
    for n, (image_id, (cls, difficult)) in enumerate(VOC_OBJECTS.items()):
        h, w = 12 + n % 2, 16 + n
        border = image_id in VOC_TRAIN or image_id in VOC_VAL
        labels = sorted({cls} | ({VOC_NAMES.index(difficult)} if difficult else set()))
        expected[image_id] = (labels, box_label(h, w, cls, (2, 3, 8, 10), border))
    return expected


def build_voc_archives() -> tuple[bytes, bytes]:
    """(VOCtrainval_11-May-2012.tar, benchmark.tgz) bytes in the real layouts."""
    voc: dict[str, bytes] = {}
    sbd: dict[str, bytes] = {}
    base = "VOCdevkit/VOC2012"
    for n, (image_id, (_, mask)) in enumerate(voc_expected().items()):
        cls, difficult = VOC_OBJECTS[image_id]
        h, w = mask.shape
        voc[f"{base}/JPEGImages/{image_id}.jpg"] = jpeg_bytes(h, w, n)
        objects = [(VOC_NAMES[cls], 0), (VOC_NAMES[cls], 0)] + ([(difficult, 1)] if difficult else [])
        voc[f"{base}/Annotations/{image_id}.xml"] = voc_xml(image_id, objects)
        if image_id in VOC_TRAIN or image_id in VOC_VAL:
            voc[f"{base}/SegmentationClass/{image_id}.png"] = palette_png_bytes(mask)
            voc[f"{base}/SegmentationObject/{image_id}.png"] = palette_png_bytes((mask > 0).astype(np.uint8))
        if image_id in SBD_TRAIN or image_id in SBD_VAL:
            # SBD masks have no ignore border; 2007_000039's deliberately disagrees with VOC's
            sbd_label = np.where(mask == 255, 0, mask) if image_id != "2007_000039" else np.full_like(mask, 4)
            sbd[f"benchmark_RELEASE/dataset/cls/{image_id}.mat"] = mat_bytes(sbd_label)
            sbd[f"benchmark_RELEASE/dataset/img/{image_id}.jpg"] = jpeg_bytes(h, w, n)
    sets = f"{base}/ImageSets/Segmentation"
    voc[f"{sets}/train.txt"] = "".join(f"{i}\n" for i in VOC_TRAIN).encode()
    voc[f"{sets}/val.txt"] = "".join(f"{i}\n" for i in VOC_VAL).encode()
    voc[f"{sets}/trainval.txt"] = "".join(f"{i}\n" for i in VOC_TRAIN + VOC_VAL).encode()
    sbd["benchmark_RELEASE/dataset/train.txt"] = "".join(f"{i}\n" for i in SBD_TRAIN).encode()
    sbd["benchmark_RELEASE/dataset/val.txt"] = "".join(f"{i}\n" for i in SBD_VAL).encode()
    sbd["benchmark_RELEASE/benchmark_code_RELEASE/README"] = b"benchmark code\n"
    return tar_bytes(voc), tar_bytes(sbd, mode="w:gz")


# ---------------------------------------------------------------------------------------- COCO


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (maskApi.c ``rleToString``), written independently of the decoder."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_counts(mask: np.ndarray) -> list[int]:
    """Column-major run lengths, zeros first."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


COCO_CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "vehicle", "id": 3, "name": "car"},
    {"supercategory": "animal", "id": 18, "name": "dog"},
    {"supercategory": "indoor", "id": 90, "name": "toothbrush"},
]
COCO_CLASSES = ["background", "person", "car", "dog", "toothbrush"]  # sparse ids 1, 3, 18, 90 -> 1..4


def rect_poly(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def build_coco_archives() -> dict[str, bytes]:
    """{filename: bytes} of train2014.zip, val2014.zip and annotations_trainval2014.zip (tiny).

    train 000009 (20x30): a person polygon (large) with a dog polygon (small) on top of it, listed
    dog first so annotation order would hide the dog; train 000025 (16x24): a crowd of cars
    (uncompressed RLE) partly covered by a toothbrush (compressed RLE); train 000030: no
    annotation (dropped). val 000042 (18x20): one car in two polygons.
    """
    toothbrush = np.zeros((16, 24), dtype=bool)
    toothbrush[4:10, 10:20] = True
    crowd = np.zeros((16, 24), dtype=bool)
    crowd[2:14, 2:14] = True
    train = {
        "images": [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 20, "width": 30},
            {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "height": 16, "width": 24},
            {"id": 30, "file_name": "COCO_train2014_000000000030.jpg", "height": 10, "width": 10},
        ],
        "annotations": [
            {
                "id": 101,
                "image_id": 9,
                "category_id": 18,
                "iscrowd": 0,
                "area": 16.0,
                "segmentation": [rect_poly(10, 6, 14, 10)],
            },
            {
                "id": 102,
                "image_id": 9,
                "category_id": 1,
                "iscrowd": 0,
                "area": 240.0,
                "segmentation": [rect_poly(4, 2, 24, 14)],
            },
            {
                "id": 103,
                "image_id": 25,
                "category_id": 3,
                "iscrowd": 1,
                "area": float(crowd.sum()),
                "segmentation": {"counts": rle_counts(crowd), "size": [16, 24]},
            },
            {
                "id": 104,
                "image_id": 25,
                "category_id": 90,
                "iscrowd": 0,
                "area": float(toothbrush.sum()),
                "segmentation": {"counts": rle_string(rle_counts(toothbrush)), "size": [16, 24]},
            },
        ],
        "categories": COCO_CATEGORIES,
    }
    val = {
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 18, "width": 20}],
        "annotations": [
            {
                "id": 201,
                "image_id": 42,
                "category_id": 3,
                "iscrowd": 0,
                "area": 30.0,
                "segmentation": [rect_poly(1, 1, 6, 6), rect_poly(12, 10, 17, 15)],
            },
        ],
        "categories": COCO_CATEGORIES,
    }

    def zip_bytes(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return buf.getvalue()

    return {
        "train2014.zip": zip_bytes(
            {
                f"train2014/{img['file_name']}": jpeg_bytes(img["height"], img["width"], i)
                for i, img in enumerate(train["images"])
            }
        ),
        "val2014.zip": zip_bytes(
            {f"val2014/{img['file_name']}": jpeg_bytes(img["height"], img["width"], 7) for img in val["images"]}
        ),
        "annotations_trainval2014.zip": zip_bytes(
            {
                "annotations/instances_train2014.json": json.dumps(train).encode(),
                "annotations/instances_val2014.json": json.dumps(val).encode(),
                "annotations/captions_train2014.json": b"{}",
            }
        ),
    }


def write_tree(root: Path, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
