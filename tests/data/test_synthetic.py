"""Tests of the seeded synthetic scene generator (geovl.data.synthetic)."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.data.change_sentences import NO_CHANGE_SENTENCES, is_no_change_sentence
from geovl.data.synthetic import (
    CHANGE_TYPES,
    CLASS_KEYWORDS,
    CLASSES,
    SceneConfig,
    generate_change_pair,
    generate_scene,
    write_caption_dataset,
    write_change_dataset,
    write_classification_dataset,
)
from geovl.data.synthetic.change_captions import ChangeInfo, change_captions
from geovl.data.synthetic.geometry import region_word

SMALL = SceneConfig(size=96)
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10}


def _stated_counts(captions: list[str], noun: str) -> list[int]:
    """Exact counts stated for ``noun`` ("two airplanes", "a white airplane") in the captions."""
    pattern = re.compile(rf"\b({'|'.join(NUMBERS)})\s+(?:white\s+|round\s+)?{noun}s?\b")
    return [NUMBERS[m.group(1)] for c in captions for m in pattern.finditer(c)]


# ---------------------------------------------------------------------------------------------- scenes


def test_same_seed_gives_identical_bytes_and_captions() -> None:
    a = generate_scene(3, 5)
    b = generate_scene(3, 5)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.captions == b.captions and a.label == b.label and a.attributes == b.attributes


def test_tiles_are_independent_of_generation_order_and_differ_by_index() -> None:
    direct = generate_scene(9, 2, SMALL)
    for i in range(2):
        generate_scene(9, i, SMALL)
    after = generate_scene(9, 2, SMALL)
    assert direct.image.tobytes() == after.image.tobytes()
    other = generate_scene(9, 3, SMALL)
    assert other.image.tobytes() != direct.image.tobytes()
    assert generate_scene(10, 2, SMALL).image.tobytes() != direct.image.tobytes()


@pytest.mark.parametrize("size", [256, (48, 80), 32])
def test_shapes_and_dtypes(size: int | tuple[int, int]) -> None:
    scene = generate_scene(0, 1, SceneConfig(size=size))
    h, w = (size, size) if isinstance(size, int) else size
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
    assert scene.attributes["size"] == [h, w]
    json.dumps(scene.attributes)  # attributes must be JSON-serialisable


@pytest.mark.parametrize("label", CLASSES)
def test_every_class_generates_and_every_caption_names_it(label: str) -> None:
    scene = generate_scene(0, 0, SceneConfig(size=128), label=label)
    assert scene.label == label == scene.attributes["class"]
    assert len(scene.captions) == 5 and len(set(scene.captions)) == 5
    for caption in scene.captions:
        assert any(k in caption for k in CLASS_KEYWORDS[label]), (label, caption)
    assert scene.image.std() > 5, "tile should not be a flat colour"


def test_stated_counts_equal_drawn_objects() -> None:
    checked = 0
    config = SceneConfig(size=192, gsd=(0.8, 2.0))
    for label, noun, kind in [("airport", "airplane", "airplane"), ("industrial", "storage tank", "tank"),
                              ("sea", "boat", "boat"), ("parking_lot", "car", "car")]:
        for i in range(6):
            scene = generate_scene(1, i, config, label=label)
            drawn = scene.attributes["objects"].get(kind, 0)
            for stated in _stated_counts(scene.captions, noun):
                assert stated == drawn, (label, i, scene.captions, drawn)
                checked += 1
    assert checked >= 5, "expected some captions with exact counts"


def test_spatial_words_follow_geometry() -> None:
    """The region word of a change equals the region of its mask's centroid (same 3x3 grid)."""
    agree = total = 0
    for change in ("buildings_built", "buildings_removed", "trees_removed"):
        for i in range(4):
            pair = generate_change_pair(3, i, SceneConfig(size=128), change=change)
            ys, xs = np.nonzero(pair.mask)
            word = region_word(float(xs.mean()), float(ys.mean()), 128, 128)
            agree += word == pair.attributes["where"]
            total += 1
    assert agree >= 0.8 * total, f"{agree}/{total}"


def test_gsd_sets_object_pixel_size() -> None:
    fine = [generate_scene(4, i, SceneConfig(size=128, gsd=0.4), label="sparse_residential") for i in range(3)]
    coarse = [generate_scene(4, i, SceneConfig(size=128, gsd=1.6), label="sparse_residential") for i in range(3)]
    size_fine = np.mean([s.attributes["object_size_px"]["building"] for s in fine])
    size_coarse = np.mean([s.attributes["object_size_px"]["building"] for s in coarse])
    assert 2.5 < size_fine / size_coarse < 6.5  # 4x finer sampling -> ~4x larger houses
    n_fine = np.mean([s.attributes["objects"]["building"] for s in fine])
    n_coarse = np.mean([s.attributes["objects"]["building"] for s in coarse])
    assert n_coarse > 3 * n_fine  # 16x more ground area in view
    assert all(s.gsd == 0.4 for s in fine)


def test_config_validation_messages() -> None:
    with pytest.raises(ValueError, match="size"):
        SceneConfig(size=16)
    with pytest.raises(ValueError, match="gsd"):
        SceneConfig(gsd=(2.0, 1.0))
    with pytest.raises(ValueError, match="unknown"):
        SceneConfig(classes=("volcano",))
    with pytest.raises(ValueError, match="class_weights"):
        SceneConfig(classes=("sea", "lake"), class_weights=(1.0,))
    with pytest.raises(ValueError, match="non-negative"):
        generate_scene(-1, 0)
    with pytest.raises(ValueError, match="unknown class"):
        generate_scene(0, 0, label="volcano")


# ---------------------------------------------------------------------------------------------- change pairs


def test_no_change_pairs_have_empty_mask_but_different_pixels() -> None:
    for i in range(3):
        pair = generate_change_pair(0, i, SMALL, change="none")
        assert pair.mask.dtype == np.uint8 and pair.mask.shape == (96, 96)
        assert pair.mask.sum() == 0
        assert pair.image_a.tobytes() != pair.image_b.tobytes()
        diff = np.abs(pair.image_a.astype(int) - pair.image_b.astype(int)).mean()
        assert diff < 25, "no-change pairs differ only radiometrically"
        assert pair.attributes["changeflag"] == 0
        assert all(c.rstrip(".") in NO_CHANGE_SENTENCES for c in pair.captions)


def test_every_no_change_caption_the_generator_writes_is_recognised() -> None:
    # The whole pool, in several orders: each sentence the generator can write for an unchanged pair must count as
    # "no change" for the LEVIR-CC reader and the change-caption metrics.
    n = len(NO_CHANGE_SENTENCES)
    for seed in range(5):
        captions = change_captions("none", ChangeInfo(), np.random.default_rng(seed), n)
        assert sorted(c.rstrip(".") for c in captions) == sorted(NO_CHANGE_SENTENCES)
        assert captions[0] == NO_CHANGE_SENTENCES[0] + "."
        unrecognised = [c for c in captions if not is_no_change_sentence(c)]
        assert not unrecognised, f"written for unchanged pairs but not no-change sentences: {unrecognised}"
    pair = generate_change_pair(0, 0, SMALL, change="none")
    assert pair.captions and all(is_no_change_sentence(c) for c in pair.captions)


def test_buildings_built_mask_marks_where_b_differs() -> None:
    for i in range(3):
        pair = generate_change_pair(1, i, SceneConfig(size=128), change="buildings_built")
        m = pair.mask.astype(bool)
        assert m.any()
        diff = np.abs(pair.image_a.astype(int) - pair.image_b.astype(int)).sum(axis=2)
        assert diff[m].mean() > 3 * diff[~m].mean()
        assert pair.attributes["count"] >= 1
        assert any("built" in c or "constructed" in c or "appear" in c for c in pair.captions)


@pytest.mark.parametrize("change", [c for c in CHANGE_TYPES if c != "none"])
def test_every_change_type_has_mask_and_captions(change: str) -> None:
    pair = generate_change_pair(2, 0, SceneConfig(size=128), change=change)
    assert pair.change_type == change
    assert pair.mask.any() and set(np.unique(pair.mask)) <= {0, 1}
    assert len(pair.captions) == 5 and len(set(pair.captions)) == 5
    assert pair.image_a.shape == pair.image_b.shape == (128, 128, 3)


def test_water_changes_cover_all_variants() -> None:
    variants = set()
    for i in range(16):
        pair = generate_change_pair(0, i, SceneConfig(size=96), change="water_changed")
        assert pair.mask.any()
        assert any(w in c for c in pair.captions for w in ("lake", "pond", "water"))
        variants.add(pair.attributes["variant"])
    assert variants == {"shrink", "expand", "appear", "disappear"}


def test_change_pairs_are_deterministic() -> None:
    a = generate_change_pair(5, 3, SMALL)
    b = generate_change_pair(5, 3, SMALL)
    assert a.image_a.tobytes() == b.image_a.tobytes() and a.image_b.tobytes() == b.image_b.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes() and a.captions == b.captions


# ---------------------------------------------------------------------------------------------- writers


def test_caption_dataset_layout(tmp_path: Path) -> None:
    config = SceneConfig(size=64)
    index = write_caption_dataset(tmp_path, n=10, seed=1, config=config, progress=False)
    data = json.loads(index.read_text())
    images = data["images"]
    assert len(images) == 10
    assert [e["split"] for e in images].count("train") == 8
    assert {e["split"] for e in images} == {"train", "val", "test"}
    sentids = [s["sentid"] for e in images for s in e["sentences"]]
    assert len(sentids) == len(set(sentids)) == 50
    for e in images:
        assert set(e) >= {"filename", "imgid", "split", "sentids", "sentences"}
        assert e["sentids"] == [s["sentid"] for s in e["sentences"]]
        assert all(set(s) == {"raw", "tokens", "imgid", "sentid"} and s["imgid"] == e["imgid"]
                   for s in e["sentences"])
        with Image.open(tmp_path / "images" / e["filename"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    with open(tmp_path / "classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["filename"] for r in rows] == [e["filename"] for e in images]
    assert all(r["class"] in CLASSES for r in rows)
    scene = generate_scene(1, 4, config)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / images[4]["filename"])), scene.image)
    assert images[4]["sentences"][0]["raw"] == scene.captions[0]


def test_caption_dataset_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    config = SceneConfig(size=48)
    index = write_caption_dataset(tmp_path, n=6, seed=2, config=config, progress=False)
    first = index.read_bytes()
    files = sorted((tmp_path / "images").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    original = files[3].read_bytes()
    files[3].unlink()
    write_caption_dataset(tmp_path, n=6, seed=2, config=config, progress=False)
    assert files[3].read_bytes() == original  # regenerated identically
    for p in files:
        if p != files[3]:
            assert p.stat().st_mtime_ns == stamps[p.name], "existing tiles must be skipped"
    assert index.read_bytes() == first
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="different settings"):
        write_caption_dataset(tmp_path, n=6, seed=3, config=config, progress=False)


def test_classification_dataset_layout(tmp_path: Path) -> None:
    config = SceneConfig(size=48, classes=("forest", "desert", "airport"))
    write_classification_dataset(tmp_path, n_per_class=2, seed=0, config=config, progress=False)
    for label in config.class_names:
        files = sorted(p.name for p in (tmp_path / label).iterdir())
        assert files == [f"{label}_0000.jpg", f"{label}_0001.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["airport", "desert", "forest"]


def test_change_dataset_layout(tmp_path: Path) -> None:
    config = SceneConfig(size=64)
    index = write_change_dataset(tmp_path, n=10, seed=0, config=config, progress=False)
    data = json.loads(index.read_text())
    assert index.name == "LevirCCcaptions.json" and len(data["images"]) == 10
    counts: dict[str, int] = {}
    for e in data["images"]:
        assert set(e) >= {"filename", "split", "sentences", "changeflag", "sentids", "imgid"}
        assert e["filename"] == f"{e['split']}_{counts.get(e['split'], 0):06d}.png"
        counts[e["split"]] = counts.get(e["split"], 0) + 1
        assert len(e["sentences"]) == 5 and e["changeflag"] in (0, 1)
        mask = np.asarray(Image.open(tmp_path / "images" / e["split"] / "label" / e["filename"]))
        assert set(np.unique(mask)) <= {0, 255}
        assert bool(mask.any()) == bool(e["changeflag"])
        for sub in ("A", "B"):
            assert (tmp_path / "images" / e["split"] / sub / e["filename"]).is_file()
    assert counts == {"train": 8, "val": 1, "test": 1}
    assert {e["changeflag"] for e in data["images"]} == {0, 1}


# ---------------------------------------------------------------------------------------------- quality


def test_generation_speed() -> None:
    """Lenient throughput check: the target is >= 50 tiles/s at 256 px on one core; fail only below 20."""
    config = SceneConfig()
    generate_scene(0, 0, config)
    start = time.perf_counter()
    n = 100
    for i in range(n):
        generate_scene(7, i, config)
    rate = n / (time.perf_counter() - start)
    assert rate >= 20, f"{rate:.1f} tiles/s"


def _features(img: np.ndarray) -> np.ndarray:
    """Cheap colour / texture features: channel mean and std, colour histogram, multi-scale gradient energy."""
    x = img.astype(np.float32) / 255.0
    g = x.mean(axis=2)

    def grad_hist(a: np.ndarray) -> np.ndarray:
        mag = np.concatenate([np.abs(np.diff(a, axis=1)).ravel(), np.abs(np.diff(a, axis=0)).ravel()])
        return np.histogram(mag, bins=[0, 0.01, 0.02, 0.04, 0.08, 0.16, 1.0])[0] / mag.size

    def down(a: np.ndarray, k: int) -> np.ndarray:
        h, w = a.shape
        return a[: h // k * k, : w // k * k].reshape(h // k, k, w // k, k).mean(axis=(1, 3))

    q = np.clip((x * 2.999).astype(int), 0, 2)
    colours = np.bincount((q[..., 0] * 9 + q[..., 1] * 3 + q[..., 2]).ravel(), minlength=27) / g.size
    saturation = (x.max(2) - x.min(2)) / (x.max(2) + 1e-3)
    return np.concatenate([
        x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0), np.sqrt(colours),
        grad_hist(g), grad_hist(down(g, 2)), grad_hist(down(g, 4)), [saturation.mean(), saturation.std()],
    ])


def test_classes_are_learnable_by_nearest_class_mean() -> None:
    """A nearest-class-mean classifier (shared within-class covariance) on cheap features separates the classes."""
    config = SceneConfig(size=96)
    n_train, n_test = 14, 6
    feats, labels = [], []
    for k, label in enumerate(CLASSES):
        for i in range(n_train + n_test):
            feats.append(_features(generate_scene(11, i, config, label=label).image))
            labels.append(k)
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % (n_train + n_test) < n_train
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mu) / sd
    means = np.stack([z[train & (y == k)].mean(0) for k in range(len(CLASSES))])
    resid = z[train] - means[y[train]]
    precision = np.linalg.inv(resid.T @ resid / len(resid) + 0.1 * np.eye(z.shape[1]))
    d = z[~train][:, None] - means[None]
    pred = np.argmin(np.einsum("nkd,de,nke->nk", d, precision, d), axis=1)
    accuracy = float((pred == y[~train]).mean())
    assert accuracy > 0.6, f"accuracy {accuracy:.2f} on {len(CLASSES)} classes (chance {1 / len(CLASSES):.2f})"
