"""Zero-shot classification: the classifier API, label sets, GeoTIFF label maps and `geovl classify`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main
from geovl.data.labelsets import LABEL_SETS, missing_labels, prompt_names, resolve_label_set
from geovl.models import Backbone, load_backbone
from geovl.tasks.zeroshot.classifier import Prediction, ZeroShotClassifier
from tests.helpers import shared_data

MICRO = ["--model", "random:geovl-micro", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def micro() -> Backbone:
    return load_backbone("random:geovl-micro", precision="fp32", device="cpu")


def _images(n: int, seed: int = 0, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------- classifier


def test_probabilities_match_hand_computed_softmax(micro: Backbone) -> None:
    labels = ["forest", "river", "farmland", "airport"]
    clf = ZeroShotClassifier(micro, labels, templates=("a satellite photo of {}.",))
    emb = micro.encode_images(_images(6))
    text = micro.encode_texts([f"a satellite photo of {name}." for name in labels])
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    scale, bias = micro.towers.logit_scale_bias()
    logits = emb @ text.T * float(scale.detach().float().exp())
    if bias is not None:
        logits += float(bias.detach().float())
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    probs = clf.probabilities(emb)
    assert probs.shape == (6, 4)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_classify_top_k_order_and_consistency(micro: Backbone) -> None:
    clf = ZeroShotClassifier(micro, label_set="eurosat")
    images = _images(5, seed=1)
    preds = clf(images, top_k=3, batch_size=2).predictions
    probs = clf.probabilities(micro.encode_images(images))
    assert len(preds) == 5
    for pred, row in zip(preds, probs, strict=True):
        assert isinstance(pred, Prediction)
        assert len(pred.labels) == len(pred.scores) == 3
        assert pred.scores == sorted(pred.scores, reverse=True)
        best = np.argsort(-row)[:3]
        assert pred.labels == [clf.classes[j] for j in best]
        np.testing.assert_allclose(pred.scores, row[best], rtol=1e-4)
    # top_k larger than the class count gives every class, probabilities summing to 1
    full = clf.predict(probs[:0].reshape(0, micro.embed_dim), top_k=3)
    assert full == []
    every = clf(images[:1], top_k=100).predictions[0]
    assert sorted(every.labels) == sorted(clf.classes)
    assert sum(every.scores) == pytest.approx(1.0, abs=1e-5)


def test_label_set_names_and_prompts(micro: Backbone) -> None:
    clf = ZeroShotClassifier(micro, label_set="eurosat")
    assert clf.classes == list(LABEL_SETS["eurosat"])
    assert clf.prompts[clf.classes.index("SeaLake")] == "lake or sea"
    # labels with a set: a subset, reported as given, prompted with the set's phrases (matching ignores case, _)
    sub = ZeroShotClassifier(micro, ["sea_lake", "Forest"], label_set="EuroSAT")
    assert sub.classes == ["sea_lake", "Forest"]
    assert sub.prompts == ["lake or sea", "forest"]
    np.testing.assert_allclose(sub.class_embeddings[0], clf.class_embeddings[clf.classes.index("SeaLake")],
                               atol=1e-5)
    # labels alone are prettified
    assert ZeroShotClassifier(micro, ["golf_course", "BareLand"]).prompts == ["golf course", "bare land"]


@pytest.mark.parametrize(
    ("labels", "label_set", "match"),
    [
        (None, None, "no classes"),
        ([], None, "empty"),
        (["forest", ""], None, "empty class name"),
        (["forest", "forest"], None, "duplicate"),
        ("forest,river", None, "single string"),
        (None, "no-such-set", "unknown label set 'no-such-set'"),
        (["Forest", "Volcano"], "eurosat", r"no class \['Volcano'\]"),
    ],
)
def test_bad_classes_raise(micro: Backbone, labels: Any, label_set: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ZeroShotClassifier(micro, labels, label_set=label_set)


def test_bad_inputs_raise(micro: Backbone) -> None:
    clf = ZeroShotClassifier(micro, ["forest", "river"])
    with pytest.raises(ValueError, match="top_k"):
        clf(_images(1), top_k=0)
    with pytest.raises(ValueError, match="no images"):
        clf([])
    with pytest.raises(ValueError, match="embeddings must be"):
        clf.probabilities(np.zeros((2, micro.embed_dim + 1), np.float32))
    with pytest.raises(ValueError, match="placeholder"):
        ZeroShotClassifier(micro, ["forest"], templates=("no placeholder",))


def _scaled_logits(micro: Backbone, emb: np.ndarray, texts: list[str]) -> np.ndarray:
    text = micro.encode_texts(texts)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    scale, _ = micro.towers.logit_scale_bias()
    return np.asarray(emb @ text.T * float(scale.detach().float().exp()), np.float64)


def test_multi_label_scores_clip_rule(micro: Backbone) -> None:
    from geovl.tasks.zeroshot.classifier import BACKGROUND_PROMPTS

    labels = ["forest", "river", "farmland"]
    clf = ZeroShotClassifier(micro, labels, templates=("a satellite photo of {}.",))
    assert not clf.has_logit_bias
    emb = micro.encode_images(_images(4, seed=7))
    lc = _scaled_logits(micro, emb, [f"a satellite photo of {name}." for name in labels])
    lb = _scaled_logits(micro, emb, list(BACKGROUND_PROMPTS))
    expected = np.exp(lc) / (np.exp(lc) + np.exp(lb).sum(axis=1, keepdims=True))
    scores = clf.scores(emb)
    assert scores.shape == (4, 3)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    # a class's score does not depend on which other classes are asked for
    alone = ZeroShotClassifier(micro, ["river"], templates=("a satellite photo of {}.",)).scores(emb)
    np.testing.assert_allclose(alone[:, 0], scores[:, 1], rtol=1e-4, atol=1e-6)


def test_multi_label_scores_sigmoid_with_bias(micro: Backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    scale, _ = micro.towers.logit_scale_bias()
    monkeypatch.setattr(micro.towers, "logit_scale_bias", lambda: (scale, torch.tensor(-2.5)))
    labels = ["forest", "river"]
    clf = ZeroShotClassifier(micro, labels, templates=("a satellite photo of {}.",))
    assert clf.has_logit_bias
    emb = micro.encode_images(_images(3, seed=8))
    logits = _scaled_logits(micro, emb, [f"a satellite photo of {name}." for name in labels]) - 2.5
    np.testing.assert_allclose(clf.scores(emb), 1 / (1 + np.exp(-logits)), rtol=1e-4, atol=1e-6)


def test_multi_label_threshold(micro: Backbone) -> None:
    clf = ZeroShotClassifier(micro, label_set="eurosat")
    images = _images(3, seed=9)
    scores = clf.scores(micro.encode_images(images))
    cut = float(np.median(scores))
    preds = clf(images, threshold=cut, top_k=len(clf.classes), batch_size=2).predictions
    for pred, row in zip(preds, scores, strict=True):
        expected = [clf.classes[j] for j in np.argsort(-row, kind="stable") if row[j] >= cut]
        assert pred.labels == expected
        assert pred.scores == sorted(pred.scores, reverse=True) and all(s >= cut for s in pred.scores)
    assert sum(len(p.labels) for p in preds) == int((scores >= cut).sum())
    # a threshold above every score gives no labels; below every score gives all of them
    high = min(0.999999, float(scores.max()) + 1e-6)
    if high > scores.max():
        assert all(p.labels == [] for p in clf(images, threshold=high, top_k=len(clf.classes)).predictions)
    low = max(1e-6, float(scores.min()) / 2)
    assert all(len(p.labels) == 10 for p in clf(images, threshold=low, top_k=len(clf.classes)).predictions)


@pytest.mark.parametrize("threshold", [0, 1, -0.1, 1.5, float("nan"), True])
def test_multi_label_bad_threshold(micro: Backbone, threshold: float) -> None:
    clf = ZeroShotClassifier(micro, ["forest", "river"])
    with pytest.raises(ValueError, match="threshold"):
        clf(_images(1), threshold=threshold, top_k=len(clf.classes))
    with pytest.raises(ValueError, match="threshold"):
        clf.predict(np.zeros((1, micro.embed_dim), np.float32), threshold=threshold)


def test_label_sets_are_complete() -> None:
    sizes = {"eurosat": 10, "ucmerced": 21, "aid": 30, "nwpu-resisc45": 45, "patternnet": 38, "mlrsnet": 46,
             "optimal-31": 31, "rsc11": 11, "rsi-cb128": 45, "rsi-cb256": 35, "whu-rs19": 19, "siri-whu": 12,
             "rsscn7": 7}
    assert {k: len(v) for k, v in LABEL_SETS.items()} == sizes
    for table in LABEL_SETS.values():
        assert all(phrase.strip() for phrase in table.values())
    assert resolve_label_set("RESISC45") is LABEL_SETS["nwpu-resisc45"]
    assert resolve_label_set("UC_Merced") is LABEL_SETS["ucmerced"]
    assert resolve_label_set("RSSCN7") is LABEL_SETS["rsscn7"]
    assert prompt_names(["dRiverLake", "gParking"], "rsscn7") == ["a river or lake", "a parking lot"]
    # datasets' misspelt folders (RSC11 "stroagetanks", MLRSNet "swimmimg_pool") match either spelling
    assert prompt_names(["stroagetanks", "storage_tanks"], "rsc11") == ["storage tanks", "storage tanks"]
    assert missing_labels(["Storage Tanks", "swimming_pool"], LABEL_SETS["rsc11"]) == ["swimming_pool"]
    assert prompt_names(["swimmimg_pool", "swimming pool"], "mlrsnet") == ["a swimming pool"] * 2
    # automatic matching still prefers the original sets
    assert prompt_names(["Forest", "River"]) == ["forest", "river"]
    assert prompt_names(["BareLand", "Viaduct"]) == ["bare land", "a viaduct"]


# ---------------------------------------------------------------- label maps


def _scene(path: Path, width: int = 160, height: int = 128) -> Path:
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    rng = np.random.default_rng(3)
    data = rng.integers(1, 256, (3, height, width), dtype=np.uint8)
    data[:, :64, :64] = 0  # the top-left chip is all nodata
    data[:, 64:, :64] = np.array([40, 120, 40], np.uint8)[:, None, None]  # a flat green chip
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform, nodata=0) as dst:
        dst.write(data)
    return path


def test_label_map_geotiff(tmp_path: Path, micro: Backbone) -> None:
    rasterio = pytest.importorskip("rasterio")
    from geovl.io.chips import ChipReader
    from geovl.tasks.zeroshot.labelmap import NODATA, classify_scene

    scene = _scene(tmp_path / "scene.tif")
    clf = ZeroShotClassifier(micro, label_set="eurosat")
    out = tmp_path / "labels.tif"
    result = classify_scene(clf, scene, out, chip_size=64, probabilities=tmp_path / "probs.tif", batch_size=2)
    assert result.grid_shape == (2, 3)
    assert result.skipped == 1 and result.classified == 5
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == "EPSG:32633"
        assert (ds.width, ds.height, ds.count, ds.dtypes[0], ds.nodata) == (3, 2, 1, "uint8", NODATA)
        assert tuple(ds.transform)[:6] == (640.0, 0.0, 500_000.0, 0.0, -640.0, 5_000_000.0)
        labels = ds.read(1)
    assert labels[0, 0] == NODATA
    reader = ChipReader(scene, size=64, min_valid_fraction=0.5)
    for chip in reader:
        expected = clf([chip.image], top_k=1).predictions[0].labels[0]
        assert clf.classes[labels[chip.row, chip.col]] == expected
    with rasterio.open(tmp_path / "probs.tif") as ds:
        probs = ds.read()
        assert probs.shape == (10, 2, 3) and ds.dtypes[0] == "float32"
    assert np.isnan(probs[:, 0, 0]).all()
    np.testing.assert_allclose(probs[:, labels != NODATA].sum(axis=0), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=0) == labels)[labels != NODATA].all()
    table = json.loads(result.table_json.read_text())
    assert [c["name"] for c in table["classes"]] == clf.classes
    assert sum(c["chips"] for c in table["classes"]) == 5 and table["nodata"] == NODATA
    rows = list(csv.DictReader(result.table_csv.open()))
    assert rows[-1]["name"] == "nodata" and rows[-1]["chips"] == "1"
    counts = {r["name"]: int(r["chips"]) for r in rows[:-1]}
    assert counts == result.counts
    # chip footprints: one lon/lat polygon per classified chip, with its class and top probability
    assert result.footprints == tmp_path / "labels.chips.geojson" and table["footprints"] == "labels.chips.geojson"
    collection = json.loads(result.footprints.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 5
    chips = {(chip.row, chip.col): chip for chip in reader}
    for feature in collection["features"]:
        props = feature["properties"]
        r, c = props["row"], props["col"]
        assert props["class_index"] == labels[r, c] and props["class_name"] == clf.classes[labels[r, c]]
        assert props["probability"] == pytest.approx(float(probs[:, r, c].max()), abs=1e-5)
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
        np.testing.assert_allclose(ring, chips[(r, c)].footprint)
        lon, lat = np.mean(ring[:4], axis=0)
        assert 14 < lon < 16 and 44 < lat < 46  # UTM 33N near 500 km E, 5000 km N
    assert {(f["properties"]["row"], f["properties"]["col"]) for f in collection["features"]} == set(chips)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_label_map_errors(tmp_path: Path, micro: Backbone) -> None:
    pytest.importorskip("rasterio")
    from geovl.tasks.zeroshot.labelmap import classify_scene

    scene = _scene(tmp_path / "scene.tif")
    clf = ZeroShotClassifier(micro, ["forest", "river"])
    with pytest.raises(ValueError, match="overwrite the scene"):
        classify_scene(clf, scene, scene)
    with pytest.raises(FileNotFoundError, match="output folder"):
        classify_scene(clf, scene, tmp_path / "missing" / "map.tif")
    with pytest.raises(ValueError, match="size"):
        classify_scene(clf, scene, tmp_path / "map.tif", chip_size=0)


# ---------------------------------------------------------------- CLI


def _image_folder(root: Path) -> list[Path]:
    paths = []
    for i, arr in enumerate(_images(3, seed=5, size=40)):
        sub = root / ("a" if i < 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"img{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_cli_classify_csv_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _image_folder(tmp_path / "imgs")
    out = tmp_path / "preds.csv"
    assert main(["classify", str(tmp_path / "imgs"), "--labels", "forest, river,farmland", "--top-k", "2",
                 "--out", str(out), "-q", *MICRO]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {r["image"] for r in rows} == {str(p) for p in paths}
    assert {r["label"] for r in rows} <= {"forest", "river", "farmland"}
    capsys.readouterr()
    assert main(["classify", str(paths[0]), "--label-set", "eurosat", "--top-k", "3", "--json", *MICRO]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["classes"] == list(LABEL_SETS["eurosat"])
    (pred,) = data["predictions"]
    assert pred["image"] == str(paths[0]) and len(pred["labels"]) == 3
    json_out = tmp_path / "preds.json"
    assert main(["classify", str(paths[0]), "--label-set", "ucmerced", "--out", str(json_out), *MICRO]) == 0
    assert len(json.loads(json_out.read_text())[0]["labels"]) == 5


def test_cli_classify_multi_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _image_folder(tmp_path / "imgs")
    capsys.readouterr()
    assert main(["classify", str(tmp_path / "imgs"), "--label-set", "eurosat", "--multi-label", "--threshold",
                 "0.01", "--json", "-q", *MICRO]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["multi_label"] is True and data["threshold"] == 0.01
    clf = ZeroShotClassifier(load_backbone("random:geovl-micro", precision="fp32", device="cpu"), label_set="eurosat")
    expected = clf(paths, threshold=0.01, top_k=len(clf.classes)).predictions
    by_image = {p["image"]: p for p in data["predictions"]}
    for path, pred in zip(paths, expected, strict=True):
        assert by_image[str(path)]["labels"] == pred.labels
        np.testing.assert_allclose(by_image[str(path)]["scores"], pred.scores, rtol=1e-4)
    for argv, message in [
        (["--multi-label", "--threshold", "1.5"], "threshold must be"),
        (["--threshold", "0.3"], "--threshold applies to --multi-label"),
    ]:
        assert main(["classify", str(paths[0]), "--label-set", "eurosat", *argv, *MICRO]) == 1
        assert message in capsys.readouterr().err


def test_cli_classify_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rasterio")
    scene = _scene(tmp_path / "scene.tif")
    assert main(["classify-scene", str(scene), "--label-set", "eurosat", "--out", str(tmp_path / "map.tif"),
                 "--chip-size", "64", "-q", *MICRO]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["grid"] == [2, 3] and summary["skipped"] == 1
    assert (tmp_path / "map.classes.json").exists() and (tmp_path / "map.classes.csv").exists()
    assert summary["footprints"] == str(tmp_path / "map.chips.geojson")
    assert len(json.loads((tmp_path / "map.chips.geojson").read_text())["features"]) == 5


def test_cli_classify_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cases = [
        (["classify", str(bad), "--label-set", "nope"], "unknown label set 'nope'"),
        (["classify", str(bad)], "no classes"),
        (["classify", str(tmp_path / "missing.png"), "--labels", "a,b"], "no such file"),
        (["classify", str(bad), "--labels", "a,b", *MICRO], "bad.png"),
        (["classify", str(bad), "--labels", " , ", *MICRO], "--labels is empty"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        assert message in capsys.readouterr().err
    assert main(["classify", "--list-label-sets"]) == 0
    listing = capsys.readouterr().out
    assert "nwpu-resisc45" in listing and "45 classes" in listing


# ---------------------------------------------------------------- accuracy on a labelled dataset


def test_cli_classify_evaluate_imagefolder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    from geovl.data import open_dataset
    from geovl.eval.classification import classification_scores
    from tests.data_layouts import write_imagefolder

    root = tmp_path / "folder"
    write_imagefolder(root)  # AnnualCrop (2 images), storage_tanks (2, one nested), Forest (1)
    labels = "AnnualCrop,Forest,StorageTanks,River"
    out = tmp_path / "report"
    capsys.readouterr()
    assert main(["eval", "classify", str(root), "--labels", labels, "--report-dir", str(out), "-q",
                 *MICRO]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the same figures by hand: classifier probabilities, folder names as truth (matched ignoring case and _)
    clf = ZeroShotClassifier(load_backbone("random:geovl-micro", precision="fp32", device="cpu"), labels.split(","))
    samples = list(open_dataset("imagefolder", root))
    assert len(samples) == 5
    truth = {"AnnualCrop": 0, "Forest": 1, "storage_tanks": 2}
    y = np.array([truth[s["label"]] for s in samples])
    probs = clf.probabilities(clf.backbone.encode_images([s["image"] for s in samples]))
    expected = classification_scores(probs, y, clf.classes)
    assert summary["figures"]["accuracy"] == pytest.approx(expected.accuracy)
    assert summary["figures"]["images"] == 5 and summary["figures"]["classes"] == 3
    assert summary["per_class"] == pytest.approx(expected.per_class)
    assert set(summary["per_class"]) == {"AnnualCrop", "Forest", "StorageTanks"}
    report = json.loads((out / "classify.json").read_text())
    assert report["details"]["confusion"]["classes"] == clf.classes
    assert np.array_equal(report["details"]["confusion"]["matrix"], expected.confusion)
    assert report["plots"]["confusion"] == "classify_confusion.png"
    assert (out / "classify_confusion.png").stat().st_size > 0 and (out / "classify.md").exists()
    assert summary["report"]["confusion"] == str(out / "classify_confusion.png")


def test_cli_classify_evaluate_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data_layouts import write_imagefolder

    root = tmp_path / "folder"
    write_imagefolder(root)
    cases = [
        (["--labels", "Forest,River"], "not among the classifier's classes"),
        (["--labels", "AnnualCrop,Forest,storage_tanks", "--holdout", "1.5"], "holdout must be"),
    ]
    for argv, message in cases:
        assert main(["eval", "classify", str(root), *argv, "-q", *MICRO]) == 1
        assert message in capsys.readouterr().err
    image = next(root.rglob("*.png"))
    assert main(["eval", "classify", str(image), "--label-set", "eurosat", *MICRO]) == 1
    assert "one labelled dataset folder" in capsys.readouterr().err


# ---------------------------------------------------------------- real model, real data


@pytest.mark.realdata
def test_bundled_model_beats_chance_on_eurosat() -> None:
    root = shared_data("eurosat_rgb")
    classes = list(LABEL_SETS["eurosat"])
    paths, targets = [], []
    for name in classes:
        files = sorted((root / name).glob("*.jpg"))[:4]
        paths += files
        targets += [name] * len(files)
    if len(paths) < 20:
        pytest.skip("too few EuroSAT images in shared data")
    clf = ZeroShotClassifier(load_backbone("geovl-rs-tiny", precision="fp32", device="cpu"), label_set="eurosat")
    preds = clf(paths, top_k=3).predictions
    top1 = np.mean([p.labels[0] == t for p, t in zip(preds, targets, strict=True)])
    assert top1 > 0.3, f"top-1 accuracy {top1:.2f} is not clearly above chance (0.10)"


@pytest.mark.realdata
def test_bundled_model_evaluate_eurosat_subset(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from geovl.eval.protocols import eval_classifier
    from geovl.eval.report import write_report

    root = shared_data("eurosat_rgb")
    clf = ZeroShotClassifier(load_backbone("geovl-rs-tiny", precision="fp32", device="cpu"), label_set="eurosat")
    report = eval_classifier(clf, root, limit_per_class=3, progress=False, workers=0)
    assert report.figures["images"] == 30 and report.figures["classes"] == 10
    assert report.figures["accuracy"] is not None and report.figures["accuracy"] > 30.0
    assert set(report.details["per_class"]) == set(LABEL_SETS["eurosat"])
    files = write_report(report, tmp_path)
    assert files["confusion"].stat().st_size > 0


def test_bad_images_are_recorded_and_skipped(micro: Backbone, tmp_path: Path) -> None:
    """One unreadable image among good ones: the good ones are classified, the bad one is listed (defect 2)."""
    good = _images(3)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    clf = ZeroShotClassifier(micro, ["forest", "river"])
    result = clf([good[0], empty, good[1], text, good[2]], top_k=1)
    assert result.kept == [0, 2, 4]
    assert [i for i, _ in result.failures] == [1, 3]
    assert "empty" in result.failures[0][1] and "not a recognised image" in result.failures[1][1]
    expected = clf(good, top_k=1).predictions
    assert [p.labels for p in result.predictions] == [p.labels for p in expected]
    np.testing.assert_allclose([p.scores for p in result.predictions], [p.scores for p in expected], rtol=1e-5)
