"""Evaluation: metrics against independent computations, protocols end to end, the `geovl eval` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geovl.cli import main
from geovl.eval.classification import classification_scores
from geovl.eval.index_quality import evaluate_faiss_index, exact_topk, recall_at_k
from geovl.eval.probe import knn_classify, linear_probe
from geovl.eval.protocols import eval_linear_probe, eval_retrieval, eval_suite, eval_zeroshot, find_benchmarks
from geovl.eval.report import write_report
from geovl.eval.retrieval import retrieval_scores
from geovl.models import create_backbone

# ---------------------------------------------------------------- retrieval metrics


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference_recalls(img: np.ndarray, txt: np.ndarray, owner: np.ndarray, k: int) -> tuple[float, float]:
    """Straightforward loops with full sorting: an independent implementation of the protocol."""
    sims = img @ txt.T
    i2t_hits = 0
    for i in range(img.shape[0]):
        order = sorted(range(txt.shape[0]), key=lambda j: (-sims[i, j], owner[j] == i))  # ties: wrong first
        i2t_hits += any(owner[j] == i for j in order[:k])
    t2i_hits = 0
    for j in range(txt.shape[0]):
        order = sorted(range(img.shape[0]), key=lambda i: (-sims[i, j], i == owner[j]))
        t2i_hits += owner[j] in order[:k]
    return 100 * i2t_hits / img.shape[0], 100 * t2i_hits / txt.shape[0]


def test_retrieval_matches_a_hand_worked_case() -> None:
    img = np.eye(3, dtype=np.float32)
    # Captions 0,1 -> image 0; 2,3 -> image 1; 4,5 -> image 2. Caption 3 points at image 2 instead.
    txt = _unit(np.array([[1, 0, 0], [1, .1, 0], [0, 1, 0], [0, .3, 1], [0, .2, 1], [0, 0, 1]], np.float32))
    owner = np.array([0, 0, 1, 1, 2, 2])
    s = retrieval_scores(img, txt, owner, curve_k=(1, 2, 5, 10))
    assert s.i2t[1] == 100.0  # every image has one caption ranked first
    assert s.t2i[1] == pytest.approx(100 * 5 / 6)  # caption 3 ranks image 1 below image 2
    assert s.t2i_ranks.tolist() == [0, 0, 0, 1, 0, 0]
    assert s.mean_recall == pytest.approx(np.mean([100, 100, 100, 100 * 5 / 6, 100, 100]))


def test_retrieval_matches_an_independent_implementation() -> None:
    rng = np.random.default_rng(0)
    img = _unit(rng.standard_normal((20, 8)))
    owner = np.repeat(np.arange(20), 5)
    txt = _unit(img[owner] + 0.9 * rng.standard_normal((100, 8)))
    s = retrieval_scores(img, txt, owner, block=7)
    for k in (1, 5, 10):
        i2t, t2i = _reference_recalls(img, txt, owner, k)
        assert s.i2t[k] == pytest.approx(i2t) and s.t2i[k] == pytest.approx(t2i)


def test_retrieval_ties_count_against_the_query() -> None:
    img = np.ones((4, 3), np.float32) / np.sqrt(3)
    s = retrieval_scores(img, img.copy(), np.arange(4))
    assert s.i2t[1] == 0.0 and s.t2i[1] == 0.0


def test_retrieval_rejects_bad_input() -> None:
    img = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="no caption"):
        retrieval_scores(img, img[:2], [0, 1])
    with pytest.raises(ValueError, match="one image index per text"):
        retrieval_scores(img, img, [0, 1])
    with pytest.raises(ValueError, match="equal D"):
        retrieval_scores(img, np.eye(4, dtype=np.float32)[:3], [0, 1, 2])


# ---------------------------------------------------------------- classification metrics


def test_classification_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 8, 300)
    scores = rng.standard_normal((300, 8)) + 2.0 * np.eye(8)[y] * (rng.random(300) < 0.6)[:, None]
    names = [f"c{i}" for i in range(8)]
    s = classification_scores(scores, y, names)
    pred = scores.argmax(1)
    assert s.accuracy == pytest.approx(100 * metrics.accuracy_score(y, pred))
    assert s.mean_per_class == pytest.approx(100 * metrics.balanced_accuracy_score(y, pred))
    assert s.top5 == pytest.approx(100 * metrics.top_k_accuracy_score(y, scores, k=5, labels=range(8)))
    np.testing.assert_array_equal(s.confusion, metrics.confusion_matrix(y, pred, labels=range(8)))
    recall = metrics.recall_score(y, pred, average=None, labels=range(8))
    assert s.per_class == pytest.approx({n: 100 * r for n, r in zip(names, recall, strict=True)})


def test_classification_top5_is_omitted_for_few_classes_and_input_is_checked() -> None:
    s = classification_scores(np.eye(3), [0, 1, 2], ["a", "b", "c"])
    assert s.accuracy == 100.0 and s.top5 is None
    with pytest.raises(ValueError, match="class indexes"):
        classification_scores(np.eye(3), [0, 1, 3], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        classification_scores(np.eye(4), [0, 1, 2, 0], ["a", "b", "c"])


# ---------------------------------------------------------------- probes


def _clusters(n_per: int, seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((4, 16)))
    y = np.repeat(np.arange(4), n_per)
    return _unit(centres[y] + spread * rng.standard_normal((len(y), 16))), y


def test_probes_separate_clean_clusters() -> None:
    x, y = _clusters(30, 0, 0.05)
    t, ty = _clusters(10, 0, 0.05)
    for result in (linear_probe(x, y, t, 4), knn_classify(x, y, t, 4, k=5)):
        assert result.scores.shape == (40, 4)
        assert (result.scores.argmax(1) == ty).all()
        np.testing.assert_allclose(result.scores.sum(1), 1.0, rtol=1e-5)


def test_knn_matches_a_direct_vote() -> None:
    x, y = _clusters(20, 2, 0.8)
    t, _ = _clusters(5, 3, 0.8)
    got = knn_classify(x, y, t, 4, k=7, temperature=0.1, block=3).scores
    for i in range(t.shape[0]):
        sims = x @ t[i]
        top = np.argsort(-sims)[:7]
        votes = np.zeros(4)
        for j in top:
            votes[y[j]] += np.exp(sims[j] / 0.1)
        np.testing.assert_allclose(got[i], votes / votes.sum(), rtol=1e-4)


# ---------------------------------------------------------------- index quality


def test_exact_topk_and_recall() -> None:
    rng = np.random.default_rng(4)
    base, q = _unit(rng.standard_normal((500, 12))), _unit(rng.standard_normal((20, 12)))
    ids = exact_topk(base, q, 10, block=64)
    np.testing.assert_array_equal(ids, np.argsort(-(q @ base.T), axis=1, kind="stable")[:, :10])
    assert recall_at_k(ids, ids, 10) == 1.0
    assert recall_at_k(np.array([[1, 2, 3, 4]]), np.array([[1, 9, 3, 8]]), 4) == 0.5


def test_flat_faiss_index_has_perfect_recall() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    base, q = _unit(rng.standard_normal((600, 16))), _unit(rng.standard_normal((30, 16)))
    quality = evaluate_faiss_index(base, q, "Flat", ks=(1, 10), timed_queries=10)
    assert quality.recall == {1: 1.0, 10: 1.0}
    with pytest.raises(ValueError, match="index factory"):
        evaluate_faiss_index(base, q, "NotAnIndex99", ks=(1,))


# ---------------------------------------------------------------- protocols on synthetic data


@pytest.fixture(scope="module")
def synthetic_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from geovl.data.synthetic import SceneConfig, write_caption_dataset, write_classification_dataset

    root = tmp_path_factory.mktemp("bench")
    cfg = SceneConfig(size=64)
    write_caption_dataset(root / "UCM-Captions", n=40, seed=0, config=cfg, progress=False)
    write_classification_dataset(root / "EuroSAT", n_per_class=4, seed=0, config=cfg, progress=False)
    return {"root": root, "captions": root / "UCM-Captions", "classes": root / "EuroSAT"}


@pytest.fixture(scope="module")
def micro():  # type: ignore[no-untyped-def]
    return create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32")


def test_eval_retrieval_on_a_caption_set(synthetic_sets: dict[str, Path], micro, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = eval_retrieval(micro, synthetic_sets["captions"], workers=0, progress=False)
    assert report.figures["images"] == 4 and report.figures["captions"] == 20  # 10% test split of 40
    assert {"i2t_R@1", "t2i_R@10", "mean_recall"} <= set(report.figures)
    assert report.dataset["fingerprint"] and report.model["name"] == "random:geovl-micro"
    files = write_report(report, tmp_path)
    assert json.loads(files["json"].read_text())["figures"]["captions"] == 20
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())


def test_eval_zeroshot_and_probe_on_a_class_set(synthetic_sets: dict[str, Path], micro) -> None:  # type: ignore[no-untyped-def]
    zs = eval_zeroshot(micro, synthetic_sets["classes"], workers=0, progress=False)
    assert zs.figures["images"] == 60 and zs.figures["classes"] == 15
    assert len(zs.details["confusion"]["matrix"]) == 15
    assert np.sum(zs.details["confusion"]["matrix"]) == 60
    lp = eval_linear_probe(micro, synthetic_sets["classes"], workers=0, progress=False, test_fraction=0.25)
    assert lp.figures["train_images"] == 45 and lp.figures["test_images"] == 15
    assert 0 <= lp.figures["linear_accuracy"] <= 100


def test_eval_zeroshot_labels_a_caption_set_from_a_csv(synthetic_sets: dict[str, Path], micro,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    from geovl.data.karpathy import KarpathyReader

    names = sorted(Path(str(s["image"])).name for s in KarpathyReader(synthetic_sets["captions"], split="test"))
    table = tmp_path / "labels.csv"
    # two classes; the last test image is not listed and is left out
    table.write_text("filename,class\n" + "".join(f"{n},{'Forest' if i % 2 else 'River'}\n"
                                                    for i, n in enumerate(names[:-1])))
    report = eval_zeroshot(micro, synthetic_sets["captions"], split="test", labels=table, label_set="eurosat",
                           workers=0, progress=False)
    assert report.figures["images"] == len(names) - 1 and report.figures["classes"] == 2
    assert report.settings["labels"] == str(table)
    table.write_text("filename,class\nnot-an-image.jpg,Forest\n")
    with pytest.raises(ValueError, match="none of its file names"):
        eval_zeroshot(micro, synthetic_sets["captions"], split="test", labels=table, workers=0, progress=False)


def test_eval_zeroshot_skips_and_lists_unreadable_images(synthetic_sets: dict[str, Path], micro,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "classes"
    shutil.copytree(synthetic_sets["classes"], root)
    forest = next(p for p in root.iterdir() if p.is_dir())
    (forest / "empty.jpg").write_bytes(b"")
    good = next(forest.glob("*.jpg"))
    (forest / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    report = eval_zeroshot(micro, root, workers=0, progress=False)
    assert report.figures["images"] == 60  # the 60 good images, nothing lost
    failed = {Path(str(f["image_id"])).name for f in report.details["failed_images"]}
    assert {"empty", "truncated"} <= {name.split(".")[0] for name in failed}


def test_eval_suite_averages_what_is_present_and_lists_the_rest(synthetic_sets: dict[str, Path], micro,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    found, missing = find_benchmarks(synthetic_sets["root"], {"EuroSAT": ("eurosat",), "AID": ("aid",)})
    assert list(found) == ["EuroSAT"] and missing == ["AID"]
    report = eval_suite(micro, synthetic_sets["root"], workers=0, progress=False, out_dir=tmp_path)
    assert report.figures["zeroshot_datasets"] == 1
    assert list(report.details["suite"]) == ["EuroSAT"]
    assert "AID" in report.details["missing"] and len(report.details["missing"]) == 9
    assert list(report.details["retrieval"]["mean_recall"]) == ["UCM-Captions"]
    assert (tmp_path / "eurosat" / "zeroshot.json").is_file()


def test_eval_cli_writes_json_markdown_and_png(synthetic_sets: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "zs"
    code = main(["eval", "zeroshot", str(synthetic_sets["classes"]), "--model", "random:geovl-micro",
                 "--workers", "0", "-q", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "zeroshot"
    assert {p.name for p in out.iterdir()} >= {"zeroshot.json", "zeroshot.md", "zeroshot_confusion.png"}
    assert "| `accuracy`" in (out / "zeroshot.md").read_text()


def test_eval_index_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    np.save(tmp_path / "emb.npy", _unit(rng.standard_normal((800, 16))))
    assert main(["eval", "index", str(tmp_path / "emb.npy"), "--factory", "Flat", "--queries", "50",
                 "--out", str(tmp_path / "rep")]) == 0
    figures = json.loads(capsys.readouterr().out)["figures"]
    assert figures["recall@10"] == 100.0
    assert main(["eval", "index", str(tmp_path / "missing"), "--out", str(tmp_path / "rep")]) == 1


@pytest.mark.realdata
def test_real_ucm_retrieval_and_eurosat_zeroshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import shared_data

    ucm, eurosat = shared_data("ucm_captions"), shared_data("eurosat_rgb")
    assert main(["eval", "retrieval", str(ucm), "--model", "random:geovl-micro", "-q", "--workers", "0",
                 "--out", str(tmp_path / "ret")]) == 0
    ret = json.loads(capsys.readouterr().out)["figures"]
    assert ret["images"] == 210 and ret["captions"] == 1050
    assert main(["eval", "zeroshot", str(eurosat), "--model", "random:geovl-micro", "-q", "--workers", "0",
                 "--limit-per-class", "10", "--out", str(tmp_path / "zs")]) == 0
    zs = json.loads(capsys.readouterr().out)["figures"]
    assert zs["images"] == 100 and zs["classes"] == 10
    assert (tmp_path / "ret" / "retrieval_recall.png").is_file() or any((tmp_path / "ret").glob("*.png"))


def test_reports_record_the_checkpoint_hash(tmp_path: Path) -> None:
    import torch

    from geovl.models import load_backbone
    from geovl.models.record import model_record
    from geovl.models.weights import sha256_file

    path = tmp_path / "w.pt"
    torch.save(create_backbone("geovl-micro", seed=3).model.state_dict(), path)
    record = model_record(load_backbone(path, architecture="geovl-micro"))
    assert record["checkpoint_sha256"] == sha256_file(path)
    assert model_record(create_backbone("geovl-micro"))["checkpoint_sha256"] is None
