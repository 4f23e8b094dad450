"""Writers of tiny datasets in the real on-disk layouts, for the reader tests.

Every image is a few pixels made from a seeded numpy array, so each file is distinct and reproducible.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def image_bytes(seed: int, fmt: str = "PNG", size: int = 8) -> bytes:
    """Encoded bytes of a ``size`` x ``size`` RGB image drawn from ``seed``."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, seed: int) -> Path:
    """Write a tiny image; the format follows the suffix (PNG, JPEG or TIFF)."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt))
    return path


def karpathy_entry(filename: str, split: str, captions: list[str], **extra: Any) -> dict[str, Any]:
    sentences = [{"raw": c, "tokens": c.strip(" .").lower().split()} for c in captions]
    return {"filename": filename, "split": split, "sentences": sentences, **extra}


def write_karpathy(root: Path, *, with_classes: bool = True) -> dict[str, Any]:
    """A UCM-like set: 4 images (2 train, 1 val, 1 test), 2 captions each, ``classes.csv``."""
    entries = [
        karpathy_entry("1.jpg", "train", ["There is a piece of farmland .", "  Green   fields . "], imgid=0),
        karpathy_entry("2.jpg", "train", ["Four airplanes are parked .", "Planes at an airport ."], imgid=1),
        karpathy_entry("3.jpg", "val", ["A beach with waves .", "Sand and sea ."], imgid=2),
        karpathy_entry("4.jpg", "test", ["Many buildings .", "A dense residential area ."], imgid=3),
    ]
    for i, e in enumerate(entries):
        write_image(root / "images" / e["filename"], seed=i)
    (root / "dataset.json").write_text(json.dumps({"dataset": "tiny", "images": entries}))
    if with_classes:
        rows = ["filename,class", "1.jpg,agricultural", "2.jpg,airplane", "3.jpg,beach", "4.jpg,buildings"]
        (root / "classes.csv").write_text("\n".join(rows) + "\n")
    return {"entries": entries}


def write_coco(root: Path) -> Path:
    """COCO captions: 3 images (one without captions), captions out of order."""
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 8, "height": 8},
        {"id": 11, "file_name": "b.jpg"},
        {"id": 12, "file_name": "c.jpg"},
    ]
    anns = [
        {"id": 1, "image_id": 11, "caption": "a road crossing"},
        {"id": 2, "image_id": 10, "caption": " a harbour with boats "},
        {"id": 3, "image_id": 11, "caption": "an intersection"},
        {"id": 4, "image_id": 10, "caption": "ships in a port"},
    ]
    for i, img in enumerate(images):
        write_image(root / "images" / img["file_name"], seed=20 + i)
    path = root / "captions_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def write_imagefolder(root: Path) -> None:
    """Three classes with different naming styles, mixed image types, and some files to ignore."""
    write_image(root / "AnnualCrop" / "AnnualCrop_1.jpg", 30)
    write_image(root / "AnnualCrop" / "AnnualCrop_2.jpg", 31)
    write_image(root / "storage_tanks" / "t1.png", 32)
    write_image(root / "storage_tanks" / "sub" / "t2.tif", 33)
    write_image(root / "Forest" / "Forest_1.JPG", 34)
    (root / "Forest" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    write_image(root / ".cache" / "x.png", 35)


def write_skyscript(root: Path) -> Path:
    """A SkyScript caption CSV with extra lon/lat columns and one empty multi-object title."""
    for i, name in enumerate(["a198234555_CH_19.jpg", "w44_US_20.jpg", "n7_DE_18.jpg"]):
        write_image(root / "images2" / name, 40 + i)
    rows = [
        "filepath,title,title_multi_objects,lon,lat,osm_id",
        'images2/a198234555_CH_19.jpg,a wind turbine,"a wind turbine, a road and a field",8.25,47.5,00123',
        "images2/w44_US_20.jpg,a baseball field,,-90.5,38.25,44",
        "images2/n7_DE_18.jpg,a church,a church next to a cemetery,,,7",
    ]
    path = root / "SkyScript_val_5K.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


GAIA_RECORD_KEYS = (
    "id",
    "image_src",
    "image_alt",
    "captions",
    "credits",
    "location",
    "lat",
    "lon",
    "tag",
    "resolution",
    "satellite",
    "sensor",
    "modalities",
)


def gaia_record(rid: int) -> dict[str, Any]:
    return {
        "id": rid,
        "image_src": f"https://example.org/img/{rid}.jpg",
        "image_alt": f"Alt text {rid}",
        "captions": [f"caption {k} of image {rid}" for k in range(5)],
        "credits": "NASA Earth Observatory",
        "location": "Greece",
        "lat": 38.0 + rid,
        "lon": 23.7,
        "tag": ["wildfires"],
        "resolution": "30 m",
        "satellite": ["Landsat 8"],
        "sensor": ["OLI"],
        "modalities": ["multispectral"],
    }


def write_gaia(root: Path) -> None:
    """Split files ``train_data.json`` (2 records) and ``validation_data.json`` (1); images by id."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_data.json").write_text(json.dumps([gaia_record(1), gaia_record(2)]))
    (root / "validation_data.json").write_text(json.dumps([gaia_record(3)]))
    write_image(root / "images" / "1.png", 50)
    write_image(root / "images" / "2.jpg", 51)
    write_image(root / "images" / "3.png", 52)


def write_wds_shard(path: Path, samples: list[dict[str, Any]]) -> Path:
    """A tar shard; each sample dict maps extension -> bytes / str / JSON-able object, plus ``__key__``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"]
            for ext, value in sample.items():
                if ext == "__key__":
                    continue
                if isinstance(value, bytes):
                    data = value
                elif isinstance(value, str):
                    data = value.encode("utf-8")
                else:
                    data = json.dumps(value).encode("utf-8")
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def img2dataset_sample(key: str, seed: int, *, captions: list[str] | None) -> dict[str, Any]:
    """One sample as img2dataset writes it (``--save_additional_columns "['id','captions']"`` for GAIA)."""
    meta: dict[str, Any] = {
        "url": f"https://example.org/{key}.jpg",
        "caption": f"alt {key}",
        "key": key,
        "status": "success",
        "width": 8,
        "height": 8,
    }
    if captions is not None:
        meta["captions"] = captions
        meta["id"] = int(key)
    return {"__key__": key, "png": image_bytes(seed), "txt": f"alt {key}", "json": meta}


def write_git10m(path: Path, *, layout: str = "text", dict_splits: bool = False) -> list[bytes]:
    """A tiny Git-10M ``save_to_disk`` folder in either released column layout; returns the image bytes."""
    import datasets

    imgs = [image_bytes(60 + i) for i in range(3)]
    features: dict[str, Any] = {"image": datasets.Image()}
    if layout == "text":
        cols: dict[str, Any] = {
            "text": ["17_GOOGLE_LEVEL_a harbour with ships", "0_GOOGLE_LEVEL_an airport", "plain caption"],
        }
        features["text"] = datasets.Value("string")
    else:
        cols = {
            "img_name": ["t_0.png", "t_1.png", "t_2.png"],
            "caption": ["dense forest", "a river", "farmland"],
            "resolution": [0.5, 1.0, 2.0],
            "Google_location": ["18_100_200", "17_50_100", "bad"],
            "img_quality_score": [0.9, 0.8, 0.7],
        }
        features.update(
            img_name=datasets.Value("string"),
            caption=datasets.Value("string"),
            resolution=datasets.Value("float64"),
            Google_location=datasets.Value("string"),
            img_quality_score=datasets.Value("float64"),
        )
    data = {"image": [{"bytes": b, "path": None} for b in imgs], **cols}
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    if dict_splits:
        datasets.DatasetDict({"train": ds.select([0, 1]), "validation": ds.select([2])}).save_to_disk(str(path))
    else:
        ds.save_to_disk(str(path))
    return imgs


def write_levircc(root: Path) -> None:
    """LEVIR-CC: 3 pairs with captions (2 train, 1 test) but images for only the two train pairs."""
    nochange = ["there is no difference .", "the two scenes seem identical ."]
    entries = [
        karpathy_entry("train_000001.png", "train", nochange, filepath="train", imgid=0),
        karpathy_entry("train_000002.png", "train", ["many houses are built .", "roads appear ."], imgid=1),
        karpathy_entry("test_000001.png", "test", ["a road is built .", "there is no difference ."], imgid=2),
    ]
    for i, name in enumerate(["train_000001.png", "train_000002.png"]):
        write_image(root / "images" / "train" / "A" / name, 70 + i)
        write_image(root / "images" / "train" / "B" / name, 80 + i)
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": entries}))


def write_secondcc(root: Path) -> None:
    """SECOND-CC: 2 pairs in ``<split>/rgb/{A,B}``, semantic maps for the first only, ``changeflag`` given."""
    entries = [
        karpathy_entry("00001.png", "train", ["the trees became buildings ."], filepath="train", changeflag=1),
        karpathy_entry("00002.png", "val", ["some ground turned into low vegetation ."], changeflag=0),
    ]
    for i, (split, name) in enumerate([("train", "00001.png"), ("val", "00002.png")]):
        write_image(root / split / "rgb" / "A" / name, 90 + i)
        write_image(root / split / "rgb" / "B" / name, 95 + i)
    write_image(root / "train" / "sem" / "A" / "00001.png", 99)
    write_image(root / "train" / "sem" / "B" / "00001.png", 98)
    (root / "SECOND-CC-AUG.json").write_text(json.dumps({"images": entries}))
