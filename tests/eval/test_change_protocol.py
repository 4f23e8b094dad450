"""The change-captioning protocol: synthetic held-out pairs, baselines, verdict scores, mask folders and windows,
heat-map agreement, with the tiny change captioner."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.data.change_sentences import normalise_sentence
from geovl.data.synthetic.change import plan_change_pair
from geovl.data.synthetic.config import SceneConfig
from geovl.eval.change_protocol import (
    HELDOUT_SEED,
    TRAINING_SEED,
    ChangePair,
    evaluate_change_captioner,
    evaluate_change_verdicts,
    mask_pairs,
    mask_windows,
    most_frequent_change_caption,
    synthetic_change_set,
    training_change_captions,
    training_scene,
)
from geovl.eval.change_scores import auroc, heat_agreement, mask_cells, verdict_scores
from geovl.models.change_captioner import NO_CHANGE_CAPTION, ChangeCaptioner, load_change_captioner
from geovl.training.change_captioner_config import ChangeTrainConfig
from geovl.training.config import config_to_dict
from tests.change_fixtures import make_tiny_change_captioner

SIDE = 256
SQUARE = (10, 66)  # rows and columns [10, 66) of the label are changed: 56 x 56 px


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ChangeCaptioner:
    folder = make_tiny_change_captioner(tmp_path_factory.mktemp("tiny-change")).folder
    return load_change_captioner(folder, device="cpu")


def _rgb(seed: int, side: int = SIDE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _write_pair(root: Path, stem: str, before: np.ndarray, after: np.ndarray, label: np.ndarray) -> None:
    for sub, array in (("A", before), ("B", after), ("label", label)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / sub / f"{stem}.png")


def _square_label(value: int = 255, side: int = SIDE) -> np.ndarray:
    label = np.zeros((side, side), np.uint8)
    label[SQUARE[0]:SQUARE[1], SQUARE[0]:SQUARE[1]] = value
    return label


@pytest.fixture
def mask_folder(tmp_path: Path) -> Path:
    """Two LEVIR-CD-style pairs: ``square`` (a 56 px changed square at the top left, labelled 255) and ``empty``."""
    root = tmp_path / "levir"
    _write_pair(root, "square", _rgb(1), _rgb(2), _square_label())
    _write_pair(root, "empty", _rgb(3), _rgb(4), np.zeros((SIDE, SIDE), np.uint8))
    return root


# ------------------------------------------------------------------------------------------- scores


def test_verdict_scores_match_a_hand_count() -> None:
    truth = [True, True, False, False, False]
    pred = [True, False, False, True, False]
    v = verdict_scores(truth, pred)
    assert (v.tp, v.fp, v.tn, v.fn, v.n_pairs, v.n_changed) == (1, 1, 2, 1, 5, 2)
    assert v.accuracy == pytest.approx(3 / 5)
    assert v.precision == pytest.approx(1 / 2) and v.recall == pytest.approx(1 / 2) and v.f1 == pytest.approx(1 / 2)
    assert v.balanced_accuracy == pytest.approx((1 / 2 + 2 / 3) / 2)
    never = verdict_scores(truth, [False] * 5)
    assert never.precision is None and never.recall == 0.0 and never.f1 == 0.0
    assert never.accuracy == pytest.approx(3 / 5) and never.balanced_accuracy == pytest.approx(0.5)
    one_class = verdict_scores([True, True], [True, False])
    assert one_class.balanced_accuracy == pytest.approx(0.5)  # only "changed" is present: its recall
    assert verdict_scores([True], [True]).to_dict()["accuracy"] == 1.0
    with pytest.raises(ValueError, match="truths"):
        verdict_scores([True], [True, False])


def test_auroc_equals_the_pairwise_count_with_ties_as_halves() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    labels = rng.random(40) < 0.4
    pos, neg = scores[labels], scores[~labels]
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert auroc(scores, labels) == pytest.approx(brute / (len(pos) * len(neg)))
    assert auroc([0.1, 0.9, 0.8], [False, True, True]) == 1.0
    assert auroc([0.9, 0.1, 0.2], [False, True, True]) == 0.0
    assert auroc([0.3, 0.3], [False, True]) == 0.5
    assert auroc([0.1, 0.2], [True, True]) is None
    with pytest.raises(ValueError, match="labels"):
        auroc([0.1], [True, False])


def test_mask_cells_fractions_on_the_centred_square() -> None:
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    mask[7, 7] = True
    np.testing.assert_allclose(mask_cells(mask, (2, 2)), [[1.0, 0.0], [0.0, 1 / 16]])
    wide = np.zeros((8, 12), bool)
    wide[:, :2] = True  # outside the centred 8 x 8 square (columns 2..9): not seen by the model
    wide[:, 2] = True
    np.testing.assert_allclose(mask_cells(wide, (1, 2)), [[0.25, 0.0]])
    tiny = np.array([[True, False], [False, False]])
    np.testing.assert_allclose(mask_cells(tiny, (4, 4)) > 0, np.kron(tiny, np.ones((2, 2))) > 0)
    with pytest.raises(ValueError, match="grid"):
        mask_cells(mask, (0, 2))


def test_heat_agreement_is_one_for_the_mask_itself_and_zero_for_its_negation() -> None:
    masks = [_square_label() > 0, np.zeros((SIDE, SIDE), bool)]
    heat = [mask_cells(m, (4, 4)).astype(np.float32) for m in masks]
    assert heat_agreement(heat, masks) == (1.0, 32, 4)  # 64 px cells: rows / columns 10..66 touch 2 x 2
    assert heat_agreement([1 - h for h in heat], masks)[0] == 0.0
    assert heat_agreement([], []) == (None, 0, 0)


# ------------------------------------------------------------------------------------------- mask folders


def test_mask_pairs_flags_and_min_fraction(mask_folder: Path) -> None:
    pairs = {p.id: p for p in mask_pairs(mask_folder)}
    assert sorted(pairs) == ["empty", "square"]
    assert pairs["square"].changed and not pairs["empty"].changed
    assert pairs["square"].mask is not None and int(pairs["square"].mask.sum()) == 56 * 56
    assert Path(str(pairs["square"].before)).parent.name == "A" and Path(str(pairs["square"].after)).parent.name == "B"
    fraction = 56 * 56 / SIDE**2
    assert not {p.id: p for p in mask_pairs(mask_folder, min_fraction=fraction)}["square"].changed
    assert {p.id: p for p in mask_pairs(mask_folder, min_fraction=fraction * 0.99)}["square"].changed


def test_mask_pairs_refuse_incomplete_folders(tmp_path: Path, mask_folder: Path) -> None:
    (mask_folder / "label" / "empty.png").unlink()
    with pytest.raises(ValueError, match=r"no label/ file, e\.g\. empty"):
        mask_pairs(mask_folder)
    with pytest.raises(ValueError, match="not a LEVIR-CD-style folder"):
        mask_pairs(tmp_path / "nowhere")
    _write_pair(tmp_path / "bad", "x", _rgb(0), _rgb(1), np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="a mask of 64x64"):
        mask_pairs(tmp_path / "bad")
    with pytest.raises(ValueError, match="min_fraction"):
        mask_pairs(mask_folder, min_fraction=1.0)


def test_mask_windows_label_by_the_mask_and_drop_slivers(mask_folder: Path) -> None:
    windows = {p.id: p for p in mask_windows(mask_folder, window=128, stride=64, min_changed=0.02)}
    # "square": the top-left window holds the whole square (19% changed); the windows starting at row or column 64
    # next to it hold a 2 px sliver of it (< 1%) and are dropped; windows clear of it are unchanged.
    expected = {"square@0,0": True, "square@0,128": False, "square@64,128": False, "square@128,0": False,
                "square@128,64": False, "square@128,128": False}
    expected.update({f"empty@{y},{x}": False for y in (0, 64, 128) for x in (0, 64, 128)})
    assert {i: p.changed for i, p in windows.items()} == expected
    before = np.asarray(Image.open(mask_folder / "A" / "square.png"))
    after = np.asarray(Image.open(mask_folder / "B" / "square.png"))
    for (y, x), pair in ((0, 0), windows["square@0,0"]), ((128, 64), windows["square@128,64"]):
        np.testing.assert_array_equal(pair.before, before[y:y + 128, x:x + 128])
        np.testing.assert_array_equal(pair.after, after[y:y + 128, x:x + 128])
        np.testing.assert_array_equal(pair.mask, _square_label()[y:y + 128, x:x + 128] > 0)
    # a larger minimum also drops the top-left window (19% changed)
    assert "square@0,0" not in {p.id for p in mask_windows(mask_folder, min_changed=0.25)}


def test_mask_windows_reach_the_far_edge_and_read_labels_of_ones(tmp_path: Path) -> None:
    _write_pair(tmp_path / "f", "p", _rgb(0, 200), _rgb(1, 200), _square_label(value=1, side=200))
    windows = {p.id: p for p in mask_windows(tmp_path / "f", window=128, stride=64)}
    offsets = {tuple(int(v) for v in i.split("@")[1].split(",")) for i in windows}
    # starts 0 and 64 leave 8 px uncovered, so a last start at 200 - 128 = 72 is added; the windows at 64 next to
    # the square hold a 2 px sliver of it and are dropped
    assert offsets == {(0, 0), (0, 72), (72, 0), (72, 72), (64, 72), (72, 64)}
    assert windows["p@0,0"].changed and not windows["p@72,72"].changed
    with pytest.raises(ValueError, match="larger than the image"):
        mask_windows(tmp_path / "f", window=256)
    with pytest.raises(ValueError, match="min_changed"):
        mask_windows(tmp_path / "f", min_changed=0.0)


# ------------------------------------------------------------------------------------------- synthetic pairs


def test_synthetic_change_set_is_the_held_out_seed_deterministic_and_parallel_safe() -> None:
    pairs = synthetic_change_set(n=6, size=64, workers=0)
    assert HELDOUT_SEED == 9001 and TRAINING_SEED != HELDOUT_SEED
    assert [p.id for p in pairs] == [f"s9001-{i:05d}" for i in range(6)]
    for p in pairs:
        assert p.changed == (p.change_type != "none") and len(p.references) == 5
        assert p.mask is not None and p.mask.shape == (64, 64) and p.mask.any() == p.changed
        assert isinstance(p.before, np.ndarray) and p.before.shape == (64, 64, 3)
    again = synthetic_change_set(n=6, size=64, workers=2)
    for a, b in zip(pairs, again, strict=True):
        assert a.references == b.references
        np.testing.assert_array_equal(a.before, b.before)
        np.testing.assert_array_equal(a.after, b.after)
    training = synthetic_change_set(TRAINING_SEED, n=6, size=64)
    assert all(not np.array_equal(a.before, b.before) for a, b in zip(pairs, training, strict=True))
    with pytest.raises(ValueError, match="either size or config"):
        synthetic_change_set(n=2, size=64, config=SceneConfig(size=64))
    with pytest.raises(ValueError, match="n must be"):
        synthetic_change_set(n=0)


def test_training_change_captions_are_the_changed_training_pairs_captions() -> None:
    config = SceneConfig(size=64)
    captions = training_change_captions(n=12, config=config, workers=0)
    plans = [plan_change_pair(TRAINING_SEED, i, config) for i in range(12)]
    assert captions == [c for p in plans if p.change_type != "none" for c in p.captions]
    assert captions
    assert most_frequent_change_caption(["A road is built.", "a road is built", "There is no difference.",
                                         "there is no difference", "there is no difference", "Houses appear."]
                                        ) == "a road is built"
    with pytest.raises(ValueError, match="no change captions"):
        most_frequent_change_caption(["There is no difference."])


def test_training_scene_reads_what_the_trainer_writes(tiny: ChangeCaptioner) -> None:
    training = config_to_dict(ChangeTrainConfig())  # what `geovl train change-captioner` stores as metadata
    rendered = training["data"]["rendered"]
    found = training_scene({"training": training, "steps": 3})
    assert found is not None
    config, seed = found
    assert seed == rendered["seed"] and config.shape == (training["model"]["image_size"],) * 2
    assert config.change_type_names == tuple(rendered["change_types"]) and config.gsd_range == tuple(rendered["gsd"])
    assert config.no_change_fraction == rendered["no_change_fraction"]
    assert training_scene(tiny.metadata) is None  # the tiny model was not trained by geovl
    rendered["count"] = 0
    assert training_scene({"training": training}) is None
    rendered.update(count=10, change_types=["floods"])
    with pytest.raises(ValueError, match="change_types"):
        training_scene({"training": training})
    del rendered["gsd"]
    with pytest.raises(ValueError, match="not a scene config"):
        training_scene({"training": training})


# ------------------------------------------------------------------------------------------- the model


def _test_pairs() -> list[ChangePair]:
    pairs = synthetic_change_set(n=10, size=64)
    assert 0 < sum(p.changed for p in pairs) < len(pairs)
    return pairs


def test_evaluate_change_captioner_baselines_from_training_captions(tiny: ChangeCaptioner) -> None:
    pairs = _test_pairs()
    test_top = Counter(normalise_sentence(c) for p in pairs if p.changed for c in p.references).most_common(1)[0][0]
    training = ["a road is built across the farmland"] * 3 + ["some houses are built"] + ["there is no difference"] * 9
    report = evaluate_change_captioner(tiny, pairs, threshold=0.0, training_captions=training, meteor=False,
                                       tokenizer="python")
    assert report.frequent_caption == "a road is built across the farmland" != test_top
    names = [m.name for m in report.methods]
    assert names == ["model", "always no-change", "most frequent change caption"]
    frequent = report.method("most frequent change caption").captions
    assert frequent is not None
    assert {s.candidate for s in frequent.overall.per_image} == {"a road is built across the farmland"}
    # always no-change: the unchanged pairs' references hold the no-change sentence itself, the changed pairs' none
    nochange = report.method("always no-change").captions
    assert nochange is not None and nochange.unchanged is not None and nochange.changed is not None
    assert nochange.unchanged.bleu4 == pytest.approx(1.0) and nochange.unchanged.rouge_l == pytest.approx(1.0)
    assert nochange.changed.bleu4 < 0.01
    unchanged = sum(not p.changed for p in pairs)
    assert nochange.no_change.accuracy == pytest.approx(unchanged / len(pairs))  # read from the caption text
    assert report.threshold == 0.0 and report.pairs_per_second > 0
    assert [p["id"] for p in report.predictions] == [p.id for p in pairs]
    assert report.heat_auroc is not None and 0.0 <= report.heat_auroc <= 1.0
    assert report.to_dict()["frequent_caption"] == report.frequent_caption


def test_captioner_accuracy_at_thresholds_zero_and_one_is_the_hand_count(tiny: ChangeCaptioner) -> None:
    pairs = _test_pairs()
    n, changed = len(pairs), sum(p.changed for p in pairs)
    training = ["a road is built"]
    every = evaluate_change_captioner(tiny, pairs, threshold=0.0, training_captions=training, meteor=False,
                                      tokenizer="python")
    model = every.method("model").verdicts
    assert (model.tp, model.fp, model.tn, model.fn) == (changed, n - changed, 0, 0)
    assert model.accuracy == pytest.approx(changed / n) and model.recall == 1.0
    assert model == every.method("most frequent change caption").verdicts
    assert all(p["verdict"] and p["caption"] != NO_CHANGE_CAPTION for p in every.predictions)
    none = evaluate_change_captioner(tiny, pairs, threshold=1.0, training_captions=training, meteor=False,
                                     tokenizer="python")
    model = none.method("model")
    assert model.verdicts.accuracy == pytest.approx((n - changed) / n) and model.verdicts.tp == 0
    assert model.verdicts == none.method("always no-change").verdicts
    # every caption is then the no-change sentence: the same figures as the "always no-change" baseline
    baseline = none.method("always no-change").captions
    assert model.captions is not None and baseline is not None
    assert model.captions.to_dict() == baseline.to_dict()
    with pytest.raises(ValueError, match="no reference captions"):
        evaluate_change_captioner(tiny, [ChangePair("x", pairs[0].before, pairs[0].after, True)],
                                  training_captions=training)


def test_evaluate_change_verdicts_on_mask_windows(tiny: ChangeCaptioner, mask_folder: Path) -> None:
    windows = mask_windows(mask_folder)
    n, changed = len(windows), sum(p.changed for p in windows)
    assert (n, changed) == (15, 1)
    every = evaluate_change_verdicts(tiny, windows, threshold=0.0)
    assert every.model.accuracy == pytest.approx(changed / n) and every.model.balanced_accuracy == pytest.approx(0.5)
    assert every.model == every.methods[2].verdicts and every.methods[2].name == "always changed"
    none = evaluate_change_verdicts(tiny, windows, threshold=1.0)
    assert none.model.accuracy == pytest.approx((n - changed) / n) and none.model.fn == changed
    assert none.model == none.methods[1].verdicts and none.methods[1].name == "always no-change"
    assert sorted(none.probabilities) == sorted(p.id for p in windows)
    assert none.heat_cells == n * 16  # the tiny model's 4 x 4 grid
    assert none.heat_changed_cells == 9  # rows / columns 10..66 touch cells 0, 1, 2 of the 32 px cells
    assert none.probability_auroc is not None and none.heat_auroc is not None
    full = evaluate_change_verdicts(tiny, mask_pairs(mask_folder))
    assert full.model.n_pairs == 2 and full.model.n_changed == 1 and full.threshold == tiny.threshold
    assert set(full.to_dict()) >= {"methods", "probabilities", "heat_auroc", "pairs_per_second"}


def test_an_unreadable_pair_is_an_error(tiny: ChangeCaptioner, tmp_path: Path) -> None:
    bad = ChangePair("gone", str(tmp_path / "missing.png"), _rgb(0), False)
    with pytest.raises(ValueError, match=r"could not be read, e\.g\. gone"):
        evaluate_change_verdicts(tiny, [bad])
    with pytest.raises(ValueError, match="unique"):
        evaluate_change_verdicts(tiny, [ChangePair("a", _rgb(0), _rgb(1), False)] * 2)


def test_robustness_pairs_change_only_the_after_image() -> None:
    from geovl.eval.change_protocol import NUISANCES, robustness_pairs

    before = np.zeros((32, 32, 3), np.uint8) + 80
    after = before.copy()
    after[8:24, 8:24, 1] = 160
    pairs = [ChangePair("p0", before, after, False, ("there is no difference",))]
    for name in NUISANCES:
        varied = robustness_pairs(pairs, name, seed=1)[0]
        assert varied.before is before and varied.changed is False and varied.id == f"p0+{name}"
        assert isinstance(varied.after, np.ndarray) and varied.after.shape == after.shape
        if name != "all":
            assert not np.array_equal(varied.after, after), name
    with pytest.raises(ValueError, match="unknown nuisance"):
        robustness_pairs(pairs, "earthquake")
