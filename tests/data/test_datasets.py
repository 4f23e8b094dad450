"""Dataset readers: each format is written in its real layout into tmp_path and read back exactly."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from geovl.data import (
    FORMATS,
    NO_CHANGE_SENTENCES,
    CocoReader,
    GaiaReader,
    Git10MReader,
    ImageFolderReader,
    KarpathyReader,
    LevirCCReader,
    SecondCCReader,
    SkyScriptReader,
    TableColumns,
    TableReader,
    WebDatasetReader,
    autodetect,
    is_no_change_sentence,
    open_dataset,
    prettify_class_name,
)
from geovl.data.git10m import parse_level_text, tile_bounds, zoom_resolution_m
from geovl.io import load_image
from tests import data_layouts as layouts
from tests.helpers import shared_data

SAMPLE_KEYS = {"image_id", "image", "captions", "label", "split", "meta"}
PAIR_KEYS = {"image_id", "image_a", "image_b", "captions", "changed", "split", "meta"}


# --- Karpathy ------------------------------------------------------------------------------------------------


def test_karpathy_reads_samples_splits_and_classes(tmp_path: Path) -> None:
    layouts.write_karpathy(tmp_path)
    reader = KarpathyReader(tmp_path)
    assert len(reader) == 4
    assert reader.splits == ["test", "train", "val"]
    assert reader.classes == ["agricultural", "airplane", "beach", "buildings"]
    first = reader[0]
    assert set(first) == SAMPLE_KEYS
    assert first == {
        "image_id": "1.jpg",
        "image": str(tmp_path / "images" / "1.jpg"),
        "captions": ["There is a piece of farmland .", "Green fields ."],
        "label": "agricultural",
        "split": "train",
        "meta": {"imgid": 0, "tokens": [["there", "is", "a", "piece", "of", "farmland"], ["green", "fields"]]},
    }
    assert load_image(first["image"]).size == (8, 8)

    train = KarpathyReader(tmp_path / "dataset.json", split="train")
    assert [s["image_id"] for s in train] == ["1.jpg", "2.jpg"]
    both = KarpathyReader(tmp_path, split=["val", "test"])
    assert [(s["image_id"], s["split"]) for s in both] == [("3.jpg", "val"), ("4.jpg", "test")]
    assert [s["label"] for s in reader[1:3]] == ["airplane", "beach"]


def test_karpathy_samples_are_copies(tmp_path: Path) -> None:
    layouts.write_karpathy(tmp_path)
    reader = KarpathyReader(tmp_path)
    sample = reader[0]
    sample["captions"].append("changed")
    sample["meta"]["x"] = 1
    assert reader[0]["captions"] == ["There is a piece of farmland .", "Green fields ."]
    assert "x" not in reader[0]["meta"]


def test_karpathy_without_classes_and_with_filepath(tmp_path: Path) -> None:
    entries = [layouts.karpathy_entry("a.png", "test", ["one ."], filepath="sub")]
    layouts.write_image(tmp_path / "imgs" / "sub" / "a.png", 1)
    (tmp_path / "caps.json").write_text(json.dumps({"images": entries}))
    reader = KarpathyReader(tmp_path / "caps.json", image_root=tmp_path / "imgs")
    assert reader[0]["image_id"] == "sub/a.png"
    assert reader[0]["image"] == str(tmp_path / "imgs" / "sub" / "a.png")
    assert reader[0]["label"] is None
    assert reader.classes == []


def test_karpathy_tokens_only_sentence_is_joined(tmp_path: Path) -> None:
    entry = {"filename": "a.png", "split": "train", "sentences": [{"tokens": ["a", "river"]}]}
    layouts.write_image(tmp_path / "images" / "a.png", 1)
    (tmp_path / "dataset.json").write_text(json.dumps({"images": [entry]}))
    assert KarpathyReader(tmp_path)[0]["captions"] == ["a river"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"split": "train", "sentences": []}, "dataset.json: image 0 has no 'filename'"),
        ({"filename": "a.png", "split": "train"}, "dataset.json: image 0 (a.png) has no 'sentences' list"),
        (
            {"filename": "a.png", "split": "train", "sentences": [{"raw": " "}]},
            "dataset.json: image 0 (a.png) sentence 0 has neither a non-empty 'raw' string nor 'tokens'",
        ),
        ({"filename": "a.png", "split": 3, "sentences": []}, "'split' must be a string"),
    ],
)
def test_karpathy_bad_entries(tmp_path: Path, entry: dict, message: str) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"images": [entry]}))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KarpathyReader(tmp_path, require_images=False)


def test_karpathy_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset\.json: no such file \(expected a Karpathy"):
        KarpathyReader(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        KarpathyReader(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=r"dataset\.json: expected an object with an 'images' list"):
        KarpathyReader(tmp_path)


def test_karpathy_missing_images_and_splits(tmp_path: Path) -> None:
    layouts.write_karpathy(tmp_path)
    (tmp_path / "images" / "2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset\.json: 1 of 4 images are missing \(e\.g\. .*2\.jpg\)"):
        KarpathyReader(tmp_path)
    skipped = KarpathyReader(tmp_path, on_missing="skip")
    assert [s["image_id"] for s in skipped] == ["1.jpg", "3.jpg", "4.jpg"]
    assert skipped.missing == ["2.jpg"]
    assert len(KarpathyReader(tmp_path, require_images=False)) == 4
    with pytest.raises(ValueError, match=r"no samples in split 'tset' \(splits present: test, train, val\)"):
        KarpathyReader(tmp_path, split="tset", on_missing="skip")
    with pytest.raises(ValueError, match="on_missing must be 'error' or 'skip'"):
        KarpathyReader(tmp_path, on_missing="ignore")  # type: ignore[arg-type]


def test_karpathy_bad_classes_csv(tmp_path: Path) -> None:
    layouts.write_karpathy(tmp_path)
    (tmp_path / "classes.csv").write_text("name,label\n1.jpg,x\n")
    with pytest.raises(ValueError, match=r"classes\.csv: expected columns 'filename,class', found name,label"):
        KarpathyReader(tmp_path)


# --- COCO ----------------------------------------------------------------------------------------------------


def test_coco_groups_captions_per_image(tmp_path: Path) -> None:
    path = layouts.write_coco(tmp_path)
    reader = CocoReader(path, split="val")
    assert [set(s) == SAMPLE_KEYS for s in reader] == [True] * 3
    assert list(reader) == [
        {
            "image_id": "a.jpg",
            "image": str(tmp_path / "images" / "a.jpg"),
            "captions": ["a harbour with boats", "ships in a port"],
            "label": None,
            "split": "val",
            "meta": {"coco_id": 10, "width": 8, "height": 8},
        },
        {
            "image_id": "b.jpg",
            "image": str(tmp_path / "images" / "b.jpg"),
            "captions": ["a road crossing", "an intersection"],
            "label": None,
            "split": "val",
            "meta": {"coco_id": 11},
        },
        {
            "image_id": "c.jpg",
            "image": str(tmp_path / "images" / "c.jpg"),
            "captions": [],
            "label": None,
            "split": "val",
            "meta": {"coco_id": 12},
        },
    ]
    assert CocoReader(path)[0]["split"] is None


def test_coco_split_field_filters(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "split": "train"}, {"id": 2, "file_name": "b.png", "split": "test"}]
    anns = [{"image_id": 2, "caption": "x"}]
    (tmp_path / "c.json").write_text(json.dumps({"images": images, "annotations": anns}))
    reader = CocoReader(tmp_path / "c.json", split="test", require_images=False)
    assert [(s["image_id"], s["captions"], s["image"]) for s in reader] == [("b.png", ["x"], str(tmp_path / "b.png"))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"images": []}, "c.json: no 'annotations' list"),
        ({"images": [{"id": 1}], "annotations": []}, r"c.json: image 0 \(id 1\) has no 'file_name'"),
        ({"images": [{"file_name": "a"}], "annotations": []}, "c.json: image 0 has no 'id'"),
        (
            {"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 2, "caption": "x"}]},
            "c.json: annotation 0 refers to image_id 2, which is not in 'images'",
        ),
        (
            {"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 1}]},
            "c.json: annotation 0 has no 'caption' string",
        ),
    ],
)
def test_coco_bad_input(tmp_path: Path, data: dict, message: str) -> None:
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        CocoReader(tmp_path / "c.json", require_images=False)


# --- ImageFolder ---------------------------------------------------------------------------------------------


def test_imagefolder_classes_labels_and_captions(tmp_path: Path) -> None:
    layouts.write_imagefolder(tmp_path)
    reader = ImageFolderReader(tmp_path, caption_template="a satellite image of {}")
    assert reader.classes == ["AnnualCrop", "Forest", "storage_tanks"]
    assert reader.class_to_idx == {"AnnualCrop": 0, "Forest": 1, "storage_tanks": 2}
    assert [(s["image_id"], s["label"], s["captions"], s["meta"]["class_index"]) for s in reader] == [
        ("AnnualCrop/AnnualCrop_1.jpg", "AnnualCrop", ["a satellite image of annual crop"], 0),
        ("AnnualCrop/AnnualCrop_2.jpg", "AnnualCrop", ["a satellite image of annual crop"], 0),
        ("Forest/Forest_1.JPG", "Forest", ["a satellite image of forest"], 1),
        ("storage_tanks/sub/t2.tif", "storage_tanks", ["a satellite image of storage tanks"], 2),
        ("storage_tanks/t1.png", "storage_tanks", ["a satellite image of storage tanks"], 2),
    ]
    assert reader[2]["image"] == str(tmp_path / "Forest" / "Forest_1.JPG")
    assert all(s["split"] is None and set(s) == SAMPLE_KEYS for s in reader)
    assert reader.class_prompts("an aerial photo of {}")[2] == "an aerial photo of storage tanks"
    plain = ImageFolderReader(tmp_path, classes=["storage_tanks", "Forest"])
    assert plain.classes == ["storage_tanks", "Forest"]
    assert [s["meta"]["class_index"] for s in plain] == [0, 0, 1]
    assert plain[0]["captions"] == []


@pytest.mark.parametrize(
    ("name", "pretty"),
    [
        ("AnnualCrop", "annual crop"),
        ("storage_tanks", "storage tanks"),
        ("HerbaceousVegetation", "herbaceous vegetation"),
        ("SeaLake", "sea lake"),
        ("baseballdiamond", "baseballdiamond"),
        ("golf-course", "golf course"),
        ("RGBImage", "rgb image"),
    ],
)
def test_prettify_class_name(name: str, pretty: str) -> None:
    assert prettify_class_name(name) == pretty


def test_imagefolder_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFolderReader(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderReader(tmp_path)
    layouts.write_imagefolder(tmp_path)
    (tmp_path / "Empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) Empty contain no images"):
        ImageFolderReader(tmp_path)
    with pytest.raises(FileNotFoundError, match="class folder for class 'Missing'"):
        ImageFolderReader(tmp_path, classes=["Missing"])
    with pytest.raises(ValueError, match=r"must contain '\{\}'"):
        ImageFolderReader(tmp_path, caption_template="no placeholder")


# --- SkyScript -----------------------------------------------------------------------------------------------


def test_skyscript_columns_and_meta(tmp_path: Path) -> None:
    path = layouts.write_skyscript(tmp_path)
    reader = SkyScriptReader(path, split="val")
    assert reader[0] == {
        "image_id": "images2/a198234555_CH_19.jpg",
        "image": str(tmp_path / "images2" / "a198234555_CH_19.jpg"),
        "captions": ["a wind turbine"],
        "label": None,
        "split": "val",
        "meta": {
            "title_multi_objects": "a wind turbine, a road and a field",
            "lon": 8.25,
            "lat": 47.5,
            "osm_id": "00123",
        },
    }
    assert reader[2]["meta"] == {
        "title_multi_objects": "a church next to a cemetery",
        "lon": None,
        "lat": None,
        "osm_id": 7,
    }
    both = SkyScriptReader(path, caption_columns=("title", "title_multi_objects"))
    assert [s["captions"] for s in both] == [
        ["a wind turbine", "a wind turbine, a road and a field"],
        ["a baseball field"],
        ["a church", "a church next to a cemetery"],
    ]
    assert both[0]["split"] is None
    assert "title" not in both[0]["meta"]


def test_skyscript_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("path,caption\nx.jpg,hello\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) filepath, title; found path, caption"):
        SkyScriptReader(tmp_path / "bad.csv")
    path = layouts.write_skyscript(tmp_path)
    with pytest.raises(ValueError, match="missing column\\(s\\) summary"):
        SkyScriptReader(path, caption_columns=["summary"])
    (tmp_path / "images2" / "w44_US_20.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 images are missing"):
        SkyScriptReader(path)
    assert [s["image_id"] for s in SkyScriptReader(path, on_missing="skip")] == [
        "images2/a198234555_CH_19.jpg",
        "images2/n7_DE_18.jpg",
    ]


# --- GAIA JSON and webdataset shards -------------------------------------------------------------------------


def test_gaia_json_splits_and_meta(tmp_path: Path) -> None:
    layouts.write_gaia(tmp_path)
    reader = GaiaReader(tmp_path)
    assert [(s["image_id"], s["split"], Path(str(s["image"])).name) for s in reader] == [
        ("1", "train", "1.png"),
        ("2", "train", "2.jpg"),
        ("3", "val", "3.png"),
    ]
    rec = layouts.gaia_record(2)
    sample = reader[1]
    assert set(sample) == SAMPLE_KEYS
    assert sample["captions"] == rec["captions"]
    assert sample["label"] is None
    expected_meta = {k: rec[k] for k in layouts.GAIA_RECORD_KEYS if k not in ("id", "captions")}
    assert sample["meta"] == {**expected_meta, "source_file": "train_data.json"}
    val = GaiaReader(tmp_path, split="val")
    assert [s["image_id"] for s in val] == ["3"]
    single = GaiaReader(tmp_path / "train_data.json")
    assert len(single) == 2


def test_gaia_bad_input(tmp_path: Path) -> None:
    layouts.write_gaia(tmp_path)
    (tmp_path / "images" / "2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images are missing .*2\.<png\|jpg"):
        GaiaReader(tmp_path)
    lenient = GaiaReader(tmp_path, require_images=False)
    assert lenient[1]["image"] == str(tmp_path / "images" / "2.png")
    with pytest.raises(ValueError, match=r"no samples in split 'test' \(splits present: train, val\)"):
        GaiaReader(tmp_path, split="test")
    bad = layouts.gaia_record(9)
    del bad["captions"]
    (tmp_path / "test_data.json").write_text(json.dumps([bad]))
    with pytest.raises(ValueError, match=r"test_data\.json: record 0 \(id 9\) has no 'captions' list of strings"):
        GaiaReader(tmp_path, require_images=False)
    (tmp_path / "test_data.json").write_text(json.dumps([layouts.gaia_record(1)]))
    with pytest.raises(ValueError, match=r"test_data\.json: record 0 repeats id 1 \(first seen in train_data\.json\)"):
        GaiaReader(tmp_path, require_images=False)
    (tmp_path / "test_data.json").write_text(json.dumps({"id": 1}))
    with pytest.raises(ValueError, match=r"test_data\.json: expected a JSON list of GAIA records"):
        GaiaReader(tmp_path, require_images=False)


def test_webdataset_shards_gaia_captions(tmp_path: Path) -> None:
    caps = [f"gaia caption {k}" for k in range(5)]
    shard0 = [layouts.img2dataset_sample(f"00000000{i}", i, captions=caps) for i in range(3)]
    shard1 = [layouts.img2dataset_sample("000010000", 9, captions=caps)]
    layouts.write_wds_shard(tmp_path / "train" / "00000.tar", shard0)
    layouts.write_wds_shard(tmp_path / "train" / "00001.tar", shard1)
    (tmp_path / "train" / "00000.parquet").write_bytes(b"not a shard")
    reader = WebDatasetReader(tmp_path / "train", split="train")
    assert [p.name for p in reader.shards] == ["00000.tar", "00001.tar"]
    samples = list(reader)
    assert [s["image_id"] for s in samples] == ["000000000", "000000001", "000000002", "000010000"]
    first = samples[0]
    assert set(first) == SAMPLE_KEYS
    assert first["image"] == layouts.image_bytes(0)
    assert load_image(first["image"]).size == (8, 8)
    assert first["captions"] == caps
    assert first["split"] == "train" and first["label"] is None
    assert first["meta"] == {
        "url": "https://example.org/000000000.jpg",
        "caption": "alt 000000000",
        "key": "000000000",
        "status": "success",
        "width": 8,
        "height": 8,
        "id": 0,
        "txt": "alt 000000000",
        "shard": "00000.tar",
    }
    # A list of shards and a glob give the same samples; iteration can be repeated.
    assert len(list(WebDatasetReader(str(tmp_path / "train" / "*.tar")))) == 4
    assert len(list(WebDatasetReader([tmp_path / "train" / "00001.tar"]))) == 1
    assert len(list(reader)) == 4


def test_webdataset_plain_txt_caption_and_missing_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    samples = [
        layouts.img2dataset_sample("000000000", 1, captions=None),
        {"__key__": "000000001", "txt": "no image here", "json": {"key": "000000001"}},
        {"__key__": "000000002", "jpg": layouts.image_bytes(2, "JPEG"), "txt": "a jpeg"},
    ]
    shard = layouts.write_wds_shard(tmp_path / "00000.tar", samples)
    with pytest.raises(ValueError, match=r"00000\.tar: sample 000000001 has no image member \(found \.json, \.txt"):
        list(WebDatasetReader(shard))
    with caplog.at_level(logging.WARNING, logger="geovl.data"):
        got = list(WebDatasetReader(shard, on_missing="skip"))
    assert "skipped 1 sample(s) without an image member" in caplog.text
    assert [(s["image_id"], s["captions"]) for s in got] == [
        ("000000000", ["alt 000000000"]),
        ("000000002", ["a jpeg"]),
    ]
    assert "txt" not in got[0]["meta"]
    assert got[1]["image"] == layouts.image_bytes(2, "JPEG")
    assert got[1]["meta"] == {"shard": "00000.tar"}


def test_webdataset_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such shard file or folder"):
        WebDatasetReader(tmp_path / "x.tar")
    with pytest.raises(FileNotFoundError, match=r"no \.tar shards in this folder"):
        WebDatasetReader(tmp_path)
    (tmp_path / "broken.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=r"broken\.tar: not a readable tar shard"):
        list(WebDatasetReader(tmp_path / "broken.tar"))
    layouts.write_wds_shard(tmp_path / "j.tar", [{"__key__": "k", "png": layouts.image_bytes(1), "json": "{oops"}])
    with pytest.raises(ValueError, match=r"j\.tar: k\.json is not valid JSON"):
        list(WebDatasetReader(tmp_path / "j.tar"))


# --- Git-10M arrow -------------------------------------------------------------------------------------------


def test_git10m_text_layout(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    imgs = layouts.write_git10m(tmp_path / "git10m")
    reader = Git10MReader(tmp_path / "git10m", split="train")
    assert len(reader) == 3
    s0, s1, s2 = reader[0], reader[1], reader[-1]
    assert set(s0) == SAMPLE_KEYS
    assert s0["image"] == imgs[0]
    assert (s0["image_id"], s0["captions"], s0["split"]) == ("0", ["a harbour with ships"], "train")
    assert s0["meta"] == {"zoom_level": 17, "resolution_m": 1.0}
    assert (s1["captions"], s1["meta"]) == (["an airport"], {"zoom_level": 0})
    assert (s2["captions"], s2["meta"]) == (["plain caption"], {})
    assert [s["image_id"] for s in reader] == ["0", "1", "2"]
    assert len(reader[0:2]) == 2
    pil = Git10MReader(tmp_path / "git10m", image_format="pil")[0]["image"]
    assert load_image(pil).size == (8, 8)
    with pytest.raises(IndexError):
        reader[3]


def test_git10m_named_columns_and_splits(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    layouts.write_git10m(tmp_path / "g", layout="named", dict_splits=True)
    reader = Git10MReader(tmp_path / "g")
    assert reader.splits == ["train", "val"]
    assert [(s["image_id"], s["split"], s["captions"]) for s in reader] == [
        ("t_0.png", "train", ["dense forest"]),
        ("t_1.png", "train", ["a river"]),
        ("t_2.png", "val", ["farmland"]),
    ]
    meta = reader[0]["meta"]
    west, south, east, north = tile_bounds(18, 100, 200)
    assert meta["bbox"] == (west, south, east, north)
    assert meta["lon"] == pytest.approx((west + east) / 2) and meta["lat"] == pytest.approx((south + north) / 2)
    assert meta["zoom_level"] == 18 and meta["resolution_m"] == 0.5 and meta["img_quality_score"] == 0.9
    assert "bbox" not in reader[2]["meta"]
    assert [s["image_id"] for s in Git10MReader(tmp_path / "g", split="validation")] == ["t_2.png"]


def test_git10m_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Git10MReader(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a datasets save_to_disk folder"):
        Git10MReader(tmp_path / "empty")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"image": ["x"], "title": ["y"]}).save_to_disk(str(tmp_path / "cols"))
    with pytest.raises(ValueError, match="no caption column 'caption/text' \\(found image, title\\)"):
        Git10MReader(tmp_path / "cols")


def test_git10m_helpers() -> None:
    assert zoom_resolution_m(18) == 0.5 and zoom_resolution_m(10) == 128.0
    assert parse_level_text("12_GOOGLE_LEVEL_x") == (12, "x")
    assert parse_level_text("no marker") == (None, "no marker")
    west, south, east, north = tile_bounds(1, 0, 0)
    assert (west, east) == (-180.0, 0.0) and south == 0.0
    assert north == pytest.approx(math.degrees(math.atan(math.sinh(math.pi))))


# --- LEVIR-CC and SECOND-CC ----------------------------------------------------------------------------------


def test_levircc_pairs_and_changed(tmp_path: Path) -> None:
    layouts.write_levircc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"1 of 3 image pairs \(A or B\) are missing .*test_000001\.png"):
        LevirCCReader(tmp_path)
    reader = LevirCCReader(tmp_path, on_missing="skip")
    assert reader.missing == ["test_000001.png"]
    first = reader[0]
    assert set(first) == PAIR_KEYS
    assert first == {
        "image_id": "train/train_000001.png",
        "image_a": str(tmp_path / "images" / "train" / "A" / "train_000001.png"),
        "image_b": str(tmp_path / "images" / "train" / "B" / "train_000001.png"),
        "captions": ["there is no difference .", "the two scenes seem identical ."],
        "changed": False,
        "split": "train",
        "meta": {
            "imgid": 0,
            "tokens": [["there", "is", "no", "difference"], ["the", "two", "scenes", "seem", "identical"]],
            "has_images": True,
        },
    }
    assert reader[1]["changed"] is True
    everything = LevirCCReader(tmp_path, require_images=False)
    assert [(s["image_id"], s["changed"], s["meta"]["has_images"]) for s in everything] == [
        ("train/train_000001.png", False, True),
        ("train/train_000002.png", True, True),
        ("test/test_000001.png", True, False),
    ]
    assert [s["image_id"] for s in LevirCCReader(tmp_path, split="test", require_images=False)] == [
        "test/test_000001.png"
    ]
    assert is_no_change_sentence(" There is no difference . ")
    assert not is_no_change_sentence("there is no difference in the roads")
    assert is_no_change_sentence("The scene remains unchanged!")
    assert all(is_no_change_sentence(s) for s in NO_CHANGE_SENTENCES)
    assert len(set(NO_CHANGE_SENTENCES)) == len(NO_CHANGE_SENTENCES)


def test_levircc_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no LEVIR-CC caption JSON found"):
        LevirCCReader(tmp_path)
    (tmp_path / "LevirCCcaptions.json").write_text(json.dumps({"images": [{"filename": "x.png", "sentences": []}]}))
    with pytest.raises(ValueError, match=r"entry x\.png has neither 'filepath' nor 'split'"):
        LevirCCReader(tmp_path, require_images=False)


def test_secondcc_layout_semantic_maps_and_changeflag(tmp_path: Path) -> None:
    layouts.write_secondcc(tmp_path)
    reader = SecondCCReader(tmp_path)
    assert [set(s) == PAIR_KEYS for s in reader] == [True, True]
    train, val = reader[0], reader[1]
    assert train["image_a"] == str(tmp_path / "train" / "rgb" / "A" / "00001.png")
    assert train["image_b"] == str(tmp_path / "train" / "rgb" / "B" / "00001.png")
    assert train["meta"]["sem_a"] == str(tmp_path / "train" / "sem" / "A" / "00001.png")
    assert train["meta"]["sem_b"] == str(tmp_path / "train" / "sem" / "B" / "00001.png")
    assert (train["changed"], train["meta"]["changeflag"]) == (True, 1)
    assert val["image_id"] == "val/00002.png"
    assert (val["changed"], val["meta"]["sem_a"], val["meta"]["sem_b"]) == (False, None, None)
    assert [s["split"] for s in SecondCCReader(tmp_path, split="val")] == ["val"]


# --- Tables --------------------------------------------------------------------------------------------------


def _table_rows(tmp_path: Path) -> list[dict]:
    layouts.write_image(tmp_path / "imgs" / "a.png", 1)
    layouts.write_image(tmp_path / "imgs" / "b.png", 2)
    return [
        {"path": "imgs/a.png", "text": "a lake", "alt": "water", "cls": "lake", "split": "train", "gsd": 0.5},
        {"path": "imgs/b.png", "text": "a field", "alt": None, "cls": "farm", "split": "test", "gsd": 10},
    ]


def test_table_csv_jsonl_parquet_agree(tmp_path: Path) -> None:
    rows = _table_rows(tmp_path)
    cols = TableColumns(image="path", text=("text", "alt"), label="cls")
    header = "path,text,alt,cls,split,gsd"
    lines = [",".join("" if r[k] is None else str(r[k]) for k in header.split(",")) for r in rows]
    (tmp_path / "t.csv").write_text("\n".join([header, *lines]) + "\n")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    readers = [TableReader(tmp_path / "t.csv", columns=cols), TableReader(tmp_path / "t.jsonl", columns=cols)]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    readers.append(TableReader(tmp_path / "t.parquet", columns=cols))
    for reader in readers:
        assert list(reader) == [
            {
                "image_id": "imgs/a.png",
                "image": str(tmp_path / "imgs" / "a.png"),
                "captions": ["a lake", "water"],
                "label": "lake",
                "split": "train",
                "meta": {"gsd": 0.5},
            },
            {
                "image_id": "imgs/b.png",
                "image": str(tmp_path / "imgs" / "b.png"),
                "captions": ["a field"],
                "label": "farm",
                "split": "test",
                "meta": {"gsd": 10},
            },
        ], reader.source
        assert [s["image_id"] for s in TableReader(reader.source, columns=cols, split="test")] == ["imgs/b.png"]


def test_table_image_bytes_list_captions_and_root(tmp_path: Path) -> None:
    img = layouts.image_bytes(5)
    rows = [
        {"image": {"bytes": img, "path": "x.png"}, "text": ["one", "two"]},
        {"image": {"bytes": None, "path": "c.png"}, "text": ["three"]},
    ]
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "c.png", "text": ["one", "", "two"], "k": [1]}) + "\n")
    layouts.write_image(tmp_path / "root" / "c.png", 3)
    reader = TableReader(tmp_path / "t.jsonl", image_root=tmp_path / "root", split="val")
    assert reader[0] == {
        "image_id": "c.png",
        "image": str(tmp_path / "root" / "c.png"),
        "captions": ["one", "two"],
        "label": None,
        "split": "val",
        "meta": {"k": [1]},
    }
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    got = TableReader(tmp_path / "b.parquet", columns=TableColumns(id=None), image_root=tmp_path / "root")
    assert got[0]["image"] == img and got[0]["image_id"] == "x.png" and got[0]["captions"] == ["one", "two"]
    assert got[1]["image"] == str(tmp_path / "root" / "c.png") and got[1]["image_id"] == "c.png"


def test_table_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        TableReader(tmp_path / "none.csv")
    (tmp_path / "t.txt").write_text("a")
    with pytest.raises(ValueError, match=r"unknown table suffix '\.txt'"):
        TableReader(tmp_path / "t.txt")
    (tmp_path / "t.csv").write_text("img,caption\na.png,x\n")
    with pytest.raises(ValueError, match=r"t\.csv: missing column\(s\) image, text; found img, caption"):
        TableReader(tmp_path / "t.csv")
    (tmp_path / "e.csv").write_text("image,text\n,x\n")
    with pytest.raises(ValueError, match=r"e\.csv: row 1 has no image"):
        TableReader(tmp_path / "e.csv")
    (tmp_path / "j.jsonl").write_text('{"image": "a.png"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"j\.jsonl: line 2 is not a JSON object"):
        TableReader(tmp_path / "j.jsonl")
    (tmp_path / "m.csv").write_text("image,text\nnope.png,x\n")
    with pytest.raises(FileNotFoundError, match=r"m\.csv: 1 of 1 images are missing"):
        TableReader(tmp_path / "m.csv")


# --- Factory and autodetection -------------------------------------------------------------------------------


def test_open_dataset_and_autodetect(tmp_path: Path) -> None:
    karpathy, coco, folder = tmp_path / "k", tmp_path / "c", tmp_path / "f"
    sky, gaia, wds = tmp_path / "s", tmp_path / "g", tmp_path / "w"
    levir, second = tmp_path / "l", tmp_path / "sc"
    layouts.write_karpathy(karpathy)
    coco_json = layouts.write_coco(coco)
    layouts.write_imagefolder(folder)
    sky_csv = layouts.write_skyscript(sky)
    layouts.write_gaia(gaia)
    layouts.write_wds_shard(wds / "00000.tar", [layouts.img2dataset_sample("000000000", 1, captions=None)])
    layouts.write_levircc(levir)
    layouts.write_secondcc(second)
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "k/images/1.jpg", "text": "x"}) + "\n")
    (tmp_path / "plain.csv").write_text("image,text\nk/images/1.jpg,x\n")
    expected = {
        karpathy: "karpathy",
        karpathy / "dataset.json": "karpathy",
        coco_json: "coco",
        folder: "imagefolder",
        sky_csv: "skyscript",
        gaia: "gaia",
        gaia / "train_data.json": "gaia",
        wds: "webdataset",
        wds / "00000.tar": "webdataset",
        levir: "levircc",
        second: "second-cc",
        tmp_path / "t.jsonl": "jsonl",
        tmp_path / "plain.csv": "csv",
    }
    assert {p: autodetect(p) for p in expected} == expected
    assert len(open_dataset("auto", karpathy, split="test")) == 1
    assert len(open_dataset("coco", coco_json)) == 3
    assert len(open_dataset("auto", folder)) == 5
    assert len(open_dataset("skyscript", sky_csv, caption_columns=["title"])) == 3
    assert len(open_dataset("gaia", gaia)) == 3
    assert len(list(open_dataset("gaia-wds", wds))) == 1
    assert len(open_dataset("levircc", levir, require_images=False)) == 3
    assert len(open_dataset("second-cc", second)) == 2
    assert len(open_dataset("jsonl", tmp_path / "t.jsonl")) == 1
    assert len(open_dataset("csv", tmp_path / "plain.csv")) == 1
    assert set(FORMATS) >= {"karpathy", "coco", "imagefolder", "skyscript", "gaia", "gaia-wds", "git10m"}
    assert set(FORMATS) >= {"levircc", "second-cc", "csv", "jsonl", "parquet"}
    with pytest.raises(ValueError, match="unknown dataset format 'nope'; known formats: karpathy, coco"):
        open_dataset("nope", karpathy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the dataset format"):
        autodetect(tmp_path / "empty")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match=r"x\.json: JSON is neither COCO"):
        autodetect(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        autodetect(tmp_path / "missing")


def test_autodetect_git10m(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    layouts.write_git10m(tmp_path / "g")
    assert autodetect(tmp_path / "g") == "git10m"
    assert len(open_dataset("auto", tmp_path / "g")) == 3


# --- Real data (../shared/data) ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_ucm_captions() -> None:
    root = shared_data("ucm_captions")
    reader = KarpathyReader(root)
    assert len(reader) == 2100
    assert sum(len(s["captions"]) for s in reader) == 10500
    assert {sp: len(KarpathyReader(root, split=sp)) for sp in ("train", "val", "test")} == {
        "train": 1680,
        "val": 210,
        "test": 210,
    }
    assert len(reader.classes) == 21
    by_id = {s["image_id"]: s for s in reader}
    assert by_id["1.jpg"]["label"] == "agricultural"
    assert by_id["101.jpg"]["label"] == "airplane"
    assert by_id["2100.jpg"]["label"] == "tenniscourt"
    assert by_id["1.jpg"]["captions"][0] == "There is a piece of farmland ."
    assert autodetect(root) == "karpathy"


@pytest.mark.realdata
def test_real_rsicd_train() -> None:
    root = shared_data("rsicd_train")
    reader = KarpathyReader(root)
    assert len(reader) == 2000
    assert reader.splits == ["train", "val"]
    assert len(KarpathyReader(root, split="train")) == 1800
    assert len(KarpathyReader(root, split="val")) == 200
    assert all(len(s["captions"]) == 5 and s["label"] is None for s in reader)


@pytest.mark.realdata
def test_real_eurosat_rgb() -> None:
    root = shared_data("eurosat_rgb")
    reader = ImageFolderReader(root, caption_template="a satellite image of {}")
    assert len(reader) == 10000
    assert reader.classes == [
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    ]
    assert reader[0]["captions"] == ["a satellite image of annual crop"]
    assert load_image(reader[0]["image"]).size == (64, 64)
    assert autodetect(root) == "imagefolder"


@pytest.mark.realdata
def test_real_levir_cc() -> None:
    root = shared_data("levir_cc")
    json_path = root / "captions" / "levircc_captions_from_tokens.json"
    everything = LevirCCReader(root, captions_json=json_path, require_images=False)
    assert len(everything) == 10077
    assert sum(len(s["captions"]) for s in everything) == 50385
    counts = {sp: sum(s["split"] == sp for s in everything) for sp in ("train", "val", "test")}
    assert counts == {"train": 6815, "val": 1333, "test": 1929}
    assert sum(s["changed"] is False for s in everything) == 5039
    with_images = LevirCCReader(root, captions_json=json_path, on_missing="skip")
    assert [s["image_id"] for s in with_images] == [
        "train/train_000016.png",
        "train/train_000051.png",
        "train/train_000054.png",
    ]
    assert all(load_image(s["image_a"]).size == (256, 256) for s in with_images)
    assert len(LevirCCReader(root, require_images=False)) == 10077  # the JSON is found in captions/
