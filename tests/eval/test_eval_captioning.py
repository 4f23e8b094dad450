"""Caption metrics: hand-computed BLEU / ROUGE-L / CIDEr-D, tokenizer parity with coco-caption, METEOR, loading."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from geovl._optional import MissingDependencyError
from geovl.eval import ptb_tokenizer
from geovl.eval.captioning import (
    METRIC_NAMES,
    CaptionScores,
    caption_metrics,
    change_caption_metrics,
    java_available,
    load_predictions,
    ptb_tokenize,
)
from tests.helpers import SHARED_DATA, shared_data

HAVE_COCO = importlib.util.find_spec("pycocoevalcap") is not None
needs_coco = pytest.mark.skipif(not HAVE_COCO, reason="needs pycocoevalcap (a geovl dependency)")
needs_java = pytest.mark.skipif(
    not (HAVE_COCO and java_available()), reason="needs pycocoevalcap and a Java runtime ('java' on PATH)"
)

# Raw caption -> what coco-caption's PTBTokenizer (Stanford CoreNLP 3.4.1 jar) returns after dropping punctuation.
# Every expected string below was produced by the jar.
PTB_CASES = [
    ("There is a piece of farmland .", "there is a piece of farmland"),
    ("A road's end, with (some) houses.", "a road 's end with -lrb- some -rrb- houses"),
    ("Many buildings; some trees: a river!", "many buildings some trees a river"),
    ("don't can't won't cannot gonna it's", "do n't ca n't wo n't can not gon na it 's"),
    ("the buildings' roofs", "the buildings roofs"),
    ("Two T-shaped roads -- and a lower-left corner...", "two t-shaped roads and a lower-left corner"),
    ("1,000 houses and a 3.5 km road at 2.5m resolution", "1,000 houses and a 3.5 km road at 2.5 m resolution"),
    ("and/or 1/2 of a*b", "and/or 1/2 of a * b"),
    ("\"quoted\" and 'single' `tick`", "quoted and single tick"),
    ("[bracket] {brace}", "-lsb- bracket -rsb- -lcb- brace -rcb-"),
    ("the U.S. is big. e.g., mr. smith etc.", "the u.s. is big e.g. mr. smith etc."),
    ("no. 5 is near fig. 3 but not no.", "no. 5 is near fig. 3 but not no"),
    ("it\u2019s \u201ccurly\u201d and a\u2014b\u2013c\u2026", "it 's curly and a b c"),
    ("100% sure; $5 #1 #tag @home x=y+z", "100 % sure $ 5 # 1 #tag @home x = y + z"),
    ("wait... what?! really?", "wait what ?! really"),
    ("  multiple \t spaces  ", "multiple spaces"),
    ("", ""),
    ("...", ""),
    ("a\\almost all", "a \\ almost all"),
    ("'90s o'clock 'tis", "'90s o'clock 't is"),
    ("Caf\u00e9 na\u00efve", "caf\u00e9 na\u00efve"),
    ("the area is 3.5.", "the area is 3.5"),
    ("some houses , and many trees .", "some houses and many trees"),
    ("-5 degrees", "-5 degrees"),
    ("5'6\" tall", "5 6 tall"),
]


# ------------------------------------------------------------------------------------------------ tokenisation


def test_python_tokenizer_matches_recorded_ptb_output() -> None:
    raw = [c for c, _ in PTB_CASES]
    assert ptb_tokenize(raw) == [e for _, e in PTB_CASES]


def test_tokenizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="list of strings"):
        ptb_tokenize("a caption")
    with pytest.raises(ValueError, match="strings"):
        ptb_tokenize(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="backend"):
        ptb_tokenize(["a"], backend="perl")  # type: ignore[arg-type]


@needs_java
def test_java_tokenizer_gives_the_recorded_output() -> None:
    raw = [c for c, _ in PTB_CASES] + ["line\rbreak and\u2028another"]
    out = ptb_tokenize(raw, backend="java")
    assert out[:-1] == [e for _, e in PTB_CASES]
    assert out[-1] == "line break and another"  # no line break shifts the captions


def _karpathy_sentences(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [s["raw"] for im in data["images"] for s in im["sentences"]]


@pytest.mark.realdata
@needs_java
def test_python_and_java_tokenizers_agree_on_real_captions() -> None:
    sentences = _karpathy_sentences(shared_data("ucm_captions") / "dataset.json")
    # LEVIR-CC (change captions) and the RSICD sample (commas, quotes, parentheses) when they are there too.
    for extra in ("levir_cc/captions/levircc_captions_from_tokens.json", "rsicd_train/dataset.json"):
        if (SHARED_DATA / extra).is_file():
            sentences += _karpathy_sentences(SHARED_DATA / extra)
    py = ptb_tokenize(sentences)
    java = ptb_tokenize(sentences, backend="java")
    diffs = [(s, a, b) for s, a, b in zip(sentences, py, java, strict=True) if a != b]
    assert not diffs, f"{len(diffs)} of {len(sentences)} differ, e.g. {diffs[:3]}"


# ------------------------------------------------------------------------------------------- hand-computed cases


def _bleu_by_hand(refs: dict[str, list[str]], cands: dict[str, str], n_max: int = 4) -> list[float]:
    """Corpus BLEU from the formula: clipped n-gram precisions, closest reference length, corpus brevity penalty.

    Zero matches are smoothed as coco-caption does ((0 + 1e-15) / (guess + 1e-9)), so values can be compared.
    """
    correct = [0] * n_max
    guess = [0] * n_max
    c_len = r_len = 0
    for i, cand in cands.items():
        c = cand.split()
        rs = [r.split() for r in refs[i]]
        c_len += len(c)
        r_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
        for n in range(1, n_max + 1):
            grams = Counter(tuple(c[k : k + n]) for k in range(len(c) - n + 1))
            max_ref: Counter[tuple[str, ...]] = Counter()
            for r in rs:
                for g, cnt in Counter(tuple(r[k : k + n]) for k in range(len(r) - n + 1)).items():
                    max_ref[g] = max(max_ref[g], cnt)
            correct[n - 1] += sum(min(cnt, max_ref[g]) for g, cnt in grams.items())
            guess[n - 1] += max(len(c) - n + 1, 0)
    bp = math.exp(1 - r_len / c_len) if c_len < r_len else 1.0
    out, prod = [], 1.0
    for n in range(n_max):
        prod *= (correct[n] + 1e-15) / (guess[n] + 1e-9)
        out.append(bp * prod ** (1 / (n + 1)))
    return out


@needs_coco
def test_bleu_clipping_by_hand() -> None:
    # Papineni et al.'s example: "the" x7 has a clipped unigram precision of 2/7; closest reference length 7 = c.
    refs = {"x": ["the cat is on the mat", "there is a cat on the mat"]}
    s = caption_metrics(refs, {"x": "the the the the the the the"}, meteor=False)
    assert s.bleu1 == pytest.approx(2 / 7, abs=1e-9)


@needs_coco
def test_bleu_brevity_penalty_by_hand() -> None:
    # c = 2, closest reference length 5 (|5-2| < |6-2|): BP = exp(1 - 5/2); both unigrams match.
    refs = {"x": ["a red car on the road", "there is a red car"]}
    s = caption_metrics(refs, {"x": "a car"}, meteor=False)
    assert s.bleu1 == pytest.approx(math.exp(1 - 5 / 2), rel=1e-9)
    assert s.per_image[0].bleu1 == pytest.approx(math.exp(1 - 5 / 2), rel=1e-9)


@needs_coco
def test_corpus_bleu_matches_the_formula() -> None:
    refs = {
        "a": ["a large white building next to a parking lot", "a white building and a parking lot"],
        "b": ["many green trees around a small pond", "a pond surrounded by trees"],
        "c": ["two tennis courts next to a road", "a road beside two tennis courts and some trees"],
    }
    cands = {"a": "a white building next to a lot", "b": "green trees around a pond", "c": "two tennis courts"}
    s = caption_metrics(refs, cands, meteor=False)
    expected = _bleu_by_hand(refs, cands)
    assert [s.bleu1, s.bleu2, s.bleu3, s.bleu4] == pytest.approx(expected, rel=1e-9)


@needs_coco
def test_rouge_l_by_hand() -> None:
    beta2 = 1.2**2

    def f(p: float, r: float) -> float:
        return (1 + beta2) * p * r / (r + beta2 * p)

    # LCS("a b c d", "a c e d f") = "a c d": P = 3/4, R = 3/5.
    s = caption_metrics({"x": ["a c e d f"]}, {"x": "a b c d"}, meteor=False)
    assert s.rouge_l == pytest.approx(f(3 / 4, 3 / 5), rel=1e-12)
    # Two references: the best precision (LCS 2 / 4 vs 3 / 4) and the best recall (2/2 vs 3/5) are taken separately.
    s = caption_metrics({"x": ["a c e d f", "b d"]}, {"x": "a b c d"}, meteor=False)
    assert s.rouge_l == pytest.approx(f(3 / 4, 1.0), rel=1e-12)


@needs_coco
def test_cider_d_by_hand() -> None:
    # Two images, one reference each: every reference n-gram has idf log(2).
    # Image "a": candidate == reference "a b": cosine 1 for n = 1, 2 and 0 for n = 3, 4 -> 10 * 2/4 = 5.
    # Image "b": "c d c d" against "c d": n=1 cosine 1/2 (clipped), n=2 1/sqrt(5) ("d c" has df 0 -> idf log 2 and
    # is clipped to 0), n=3,4: 0; length penalty exp(-(4-2)^2 / (2 * 6^2)).
    s = caption_metrics({"a": ["a b"], "b": ["c d"]}, {"a": "a b", "b": "c d c d"}, meteor=False)
    expected_b = 10 * (0.5 + 1 / math.sqrt(5)) / 4 * math.exp(-4 / 72)
    assert [r.cider_d for r in s.per_image] == pytest.approx([5.0, expected_b], rel=1e-9)
    assert s.cider_d == pytest.approx((5.0 + expected_b) / 2, rel=1e-9)


def _cider_d_reference(refs: dict[str, list[str]], cands: dict[str, str], sigma: float = 6.0) -> dict[str, float]:
    """CIDEr-D from Vedantam et al. (with the clipping and Gaussian length penalty of CIDEr-D), written from the
    formula: tf-idf n-gram vectors (idf from the references' document frequencies), clipped candidate weights,
    cosine per n and reference, mean over n = 1..4 and references, x10."""
    n_img = len(refs)

    def grams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
        return Counter(tuple(words[k : k + n]) for k in range(len(words) - n + 1))

    df: Counter[tuple[str, ...]] = Counter()
    for rs in refs.values():
        df.update({g for r in rs for n in range(1, 5) for g in grams(r.split(), n)})

    def vec(words: list[str], n: int) -> dict[tuple[str, ...], float]:
        return {g: c * (math.log(n_img) - math.log(max(1.0, df[g]))) for g, c in grams(words, n).items()}

    out = {}
    for i, cand in cands.items():
        cw = cand.split()
        total = 0.0
        for r in refs[i]:
            rw = r.split()
            penalty = math.exp(-((len(cw) - len(rw)) ** 2) / (2 * sigma**2))
            for n in range(1, 5):
                vc, vr = vec(cw, n), vec(rw, n)
                dot = sum(min(w, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, w in vc.items())
                nc = math.sqrt(sum(w * w for w in vc.values()))
                nr = math.sqrt(sum(w * w for w in vr.values()))
                total += (dot / (nc * nr) if nc and nr else 0.0) * penalty
        out[i] = 10.0 * total / 4 / len(refs[i])
    return out


@needs_coco
def test_cider_d_matches_an_independent_implementation() -> None:
    refs = {
        "a": ["a large white building next to a parking lot", "a white building and a parking lot", "a building"],
        "b": ["many green trees around a small pond", "a pond surrounded by trees"],
        "c": ["two tennis courts next to a road", "a road beside two tennis courts and some trees"],
    }
    cands = {"a": "a white white white building", "b": "green trees around a pond", "c": "a road a road a road"}
    s = caption_metrics(refs, cands, meteor=False)
    expected = _cider_d_reference(refs, cands)
    assert {r.image_id: r.cider_d for r in s.per_image} == pytest.approx(expected, rel=1e-9)


@needs_coco
def test_identical_candidates_score_one() -> None:
    refs = {
        1: ["a large white building next to a parking lot", "a white building beside a lot"],
        2: ["many green trees around a small pond", "trees around a pond"],
    }
    s = caption_metrics(refs, {i: r[0] for i, r in refs.items()}, meteor=False)
    assert [s.bleu1, s.bleu2, s.bleu3, s.bleu4] == pytest.approx([1.0] * 4, abs=1e-6)
    assert s.rouge_l == pytest.approx(1.0)
    assert s.cider_d > 1.0
    assert s.meteor is None and s.s_m is None and s.notes == ()


@needs_coco
def test_empty_candidates_score_zero() -> None:
    s = caption_metrics({"a": ["a road"], "b": ["a river"]}, {"a": "", "b": "..."}, meteor=False)
    assert (s.bleu1, s.rouge_l, s.cider_d) == (pytest.approx(0.0, abs=1e-6), 0.0, 0.0)


# ---------------------------------------------------------------------------------------------- inputs, results


@needs_coco
def test_missing_ids_are_listed() -> None:
    refs = {f"img{i}": ["a road"] for i in range(8)}
    with pytest.raises(ValueError, match=r"reference id\(s\) have no candidate: 'img1', 'img2'.*and 2 more"):
        caption_metrics(refs, {"img0": "a road"}, meteor=False)
    with pytest.raises(ValueError, match=r"candidate id\(s\) have no references: 'extra'"):
        caption_metrics({"a": ["x"]}, {"a": "x", "extra": "y"}, meteor=False)


@needs_coco
@pytest.mark.parametrize(
    ("refs", "cands", "message"),
    [
        ({"a": "a road"}, {"a": "x"}, "list of strings"),
        ({"a": []}, {"a": "x"}, "empty reference list"),
        ({"a": ["x", 3]}, {"a": "x"}, "must all be strings"),
        ({"a": ["x"]}, {"a": ["x"]}, "must be one string"),
        ({1: ["x"], "1": ["y"]}, {"1": "x"}, "read the same"),
        ({(1, 2): ["x"]}, {(1, 2): "x"}, "strings or integers"),
        ({}, {}, "no candidates"),
        (["x"], {"a": "x"}, "mapping"),
    ],
)
def test_bad_inputs(refs: object, cands: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        caption_metrics(refs, cands, meteor=False)  # type: ignore[arg-type]


@needs_coco
def test_integer_and_string_ids_match() -> None:
    s = caption_metrics({1: ["a road"], 2: ["a river"]}, {"1": "a road", "2": "a river"}, meteor=False)
    assert [r.image_id for r in s.per_image] == ["1", "2"]


@needs_coco
def test_results_helpers() -> None:
    refs = {"a": ["a road next to trees"], "b": ["a river"], "c": ["a large airport"]}
    s = caption_metrics(refs, {"a": "a road next to trees", "b": "a lake", "c": "an airport"}, meteor=False)
    assert isinstance(s, CaptionScores) and s.n_images == 3 and s.tokenizer == "python"
    pct = s.as_percent()
    assert list(pct) == list(METRIC_NAMES)
    assert pct["CIDEr-D"] == pytest.approx(100 * s.cider_d) and pct["S*m"] is None
    assert s.score("BLEU-4") == s.bleu4 == s.score("bleu4")
    assert [r.image_id for r in s.ranked("ROUGE-L", k=2)] == ["c", "b"]  # R-L 0.33 < 0.5
    assert [r.image_id for r in s.ranked("ROUGE-L", k=1, worst=False)] == ["a"]
    d = s.to_dict(per_image=True)
    json.dumps(d)
    assert d["per_image"][0]["references"] == ["a road next to trees"] and d["s_m"] is None
    with pytest.raises(ValueError, match="unknown metric"):
        s.score("SPICE")


# ----------------------------------------------------------------------------------------------- coco-caption


@needs_java
def test_corpus_figures_equal_cocoevalcap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run pycocoevalcap's own COCOEvalCap (Java PTBTokenizer) and compare every figure and per-image score."""
    import pycocoevalcap.eval as coco_eval

    class _Skip:  # SPICE needs models downloaded at run time and METEOR is checked elsewhere
        def __init__(self, name: str) -> None:
            self.name = name

        def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
            return 0.0, [0.0] * len(gts)

        def method(self) -> str:
            return self.name

    monkeypatch.setattr(coco_eval, "Spice", lambda: _Skip("SPICE"))
    monkeypatch.setattr(coco_eval, "Meteor", lambda: _Skip("METEOR"))
    words = ["Many", "green trees", "are around", "a", "white building,", "two", "tennis courts", "(near)", "a road."]
    refs: dict[int, list[str]] = {}
    cands: dict[int, str] = {}
    for i in range(12):
        refs[i] = [" ".join(words[(i + k + j) % len(words)] for j in range(3 + k)) for k in range(5)]
        cands[i] = " ".join(words[(2 * i + j) % len(words)] for j in range(2 + i % 5))

    class _Coco:
        def __init__(self, anns: dict[int, list[str]]) -> None:
            self.imgToAnns = {i: [{"image_id": i, "caption": c} for c in caps] for i, caps in anns.items()}

        def getImgIds(self) -> list[int]:  # pycocotools' name
            return list(self.imgToAnns)

    ev = coco_eval.COCOEvalCap(_Coco(refs), _Coco({i: [c] for i, c in cands.items()}))
    ev.evaluate()
    ours = caption_metrics(refs, cands, meteor=False)
    theirs = [ev.eval[k] for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")]
    mine = [ours.bleu1, ours.bleu2, ours.bleu3, ours.bleu4, ours.rouge_l, ours.cider_d]
    assert mine == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    for row in ours.per_image:
        img = ev.imgToEval[int(row.image_id)]
        assert (row.bleu4, row.rouge_l, row.cider_d) == pytest.approx(
            (img["Bleu_4"], img["ROUGE_L"], img["CIDEr"]), rel=1e-12, abs=1e-15
        )


# ----------------------------------------------------------------------------------------------------- METEOR

LEVIR_LIKE_REFS = {
    "p1": ["there is no difference", "the two scenes seem identical", "no change has occurred"],
    "p2": ["the scene is the same as before", "there is no difference", "almost nothing has changed"],
    "p3": ["some houses are built along the road", "many buildings appear near the road"],
    "p4": ["a road is built in the bare land", "a new road appears in the empty area"],
    "p5": ["trees are removed and houses are built", "several villas replace the trees"],
}
LEVIR_LIKE_CANDS = {
    "p1": "there is no difference .",
    "p2": "some houses are built",
    "p3": "many houses are built along the road",
    "p4": "there is no difference",
    "p5": "some villas replace the trees",
}


@pytest.fixture(scope="module")
def change_scores_with_meteor():  # type: ignore[no-untyped-def]
    if not (HAVE_COCO and java_available()):
        pytest.skip("needs pycocoevalcap and a Java runtime ('java' on PATH)")
    return change_caption_metrics(LEVIR_LIKE_REFS, LEVIR_LIKE_CANDS)  # the only METEOR (JVM) start in this file


def test_meteor_and_s_m(change_scores_with_meteor) -> None:  # type: ignore[no-untyped-def]
    for part in (change_scores_with_meteor.overall, change_scores_with_meteor.changed):
        assert part.tokenizer == "java", "with METEOR running, the jar tokenises"
        assert part.meteor is not None and 0.0 < part.meteor <= 1.0
        assert part.s_m == pytest.approx((part.bleu4 + part.meteor + part.rouge_l + part.cider_d) / 4)
        assert part.as_percent()["S*m"] == pytest.approx(100 * part.s_m)
        assert all(r.meteor is not None for r in part.per_image)
    # Per-image METEOR does not depend on the subset; the unchanged p1 candidate is a reference verbatim.
    unchanged = change_scores_with_meteor.unchanged
    assert unchanged.per_image[0].image_id == "p1" and unchanged.per_image[0].meteor == pytest.approx(1.0, abs=0.01)


@needs_coco
def test_meteor_is_none_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.warns(RuntimeWarning, match="default-jre-headless"):
        s = caption_metrics({"a": ["a road"]}, {"a": "a road"})
    assert s.meteor is None and s.s_m is None and s.tokenizer == "python"
    assert "java" in s.notes[0] and s.bleu1 == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="needs Java"):
        ptb_tokenize(["a"], backend="java")


@needs_java
def test_auto_tokenizer_falls_back_to_python_when_the_jar_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_jar(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(cmd, 1, b"", b"jar broke")

    monkeypatch.setattr(ptb_tokenizer.subprocess, "run", failing_jar)  # METEOR starts with Popen, not run
    refs = {"a": ["a road next to trees"], "b": ["a river"]}
    with pytest.warns(RuntimeWarning, match="jar broke"):
        s = caption_metrics(refs, {"a": "a road next to trees", "b": "a lake"})
    assert s.tokenizer == "python" and "Python port" in s.notes[0]
    assert s.meteor is not None
    with pytest.raises(RuntimeError, match="jar broke"):
        caption_metrics(refs, {"a": "a road", "b": "a lake"}, meteor=False, tokenizer="java")


@needs_java
def test_forced_tokenizer_is_used_without_meteor() -> None:
    refs = {"a": ["A road's end, with (some) houses."], "b": ["a river"]}
    cands = {"a": "a road's end", "b": "a lake"}
    java = caption_metrics(refs, cands, meteor=False, tokenizer="java")
    python = caption_metrics(refs, cands, meteor=False)
    assert (java.tokenizer, python.tokenizer) == ("java", "python")
    assert java.to_dict() | {"tokenizer": None} == python.to_dict() | {"tokenizer": None}


@needs_coco
def test_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer"):
        caption_metrics({"a": ["x"]}, {"a": "x"}, meteor=False, tokenizer="perl")  # type: ignore[arg-type]


def test_missing_pycocoevalcap_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)
    with pytest.raises(MissingDependencyError, match=r"'pycocoevalcap' is needed for caption metrics.*reinstall geovl"):
        caption_metrics({"a": ["x"]}, {"a": "x"}, meteor=False)


# ------------------------------------------------------------------------------------------- change captioning


@needs_coco
def test_change_caption_subsets_and_no_change_detection() -> None:
    out = change_caption_metrics(LEVIR_LIKE_REFS, LEVIR_LIKE_CANDS, meteor=False)
    assert out.overall.n_images == 5 and out.changed is not None and out.unchanged is not None
    assert [r.image_id for r in out.unchanged.per_image] == ["p1", "p2"]
    assert [r.image_id for r in out.changed.per_image] == ["p3", "p4", "p5"]
    # Each subset is its own corpus, the same as scoring it alone.
    alone = caption_metrics({k: LEVIR_LIKE_REFS[k] for k in ("p3", "p4", "p5")},
                            {k: LEVIR_LIKE_CANDS[k] for k in ("p3", "p4", "p5")}, meteor=False)  # fmt: skip
    assert out.changed.to_dict() == alone.to_dict()
    # Says "no change": p1 (right), p4 (wrong); p2 misses a no-change pair. Correct: p1, p3, p5 -> 3/5.
    det = out.no_change
    assert det.accuracy == pytest.approx(3 / 5)
    assert (det.n_unchanged, det.n_predicted_unchanged, det.n_correct_unchanged) == (2, 2, 1)
    assert (det.precision, det.recall, det.f1) == (0.5, 0.5, 0.5)
    d = out.to_dict()
    json.dumps(d)
    assert set(d) == {"all", "changed", "unchanged", "no_change_detection"}
    assert set(out.as_percent()) == {"all", "changed", "unchanged"}


@needs_coco
def test_change_flags_override_and_missing_flags() -> None:
    flags = {k: k != "p3" for k in LEVIR_LIKE_REFS}  # only p3 "unchanged"
    out = change_caption_metrics(LEVIR_LIKE_REFS, LEVIR_LIKE_CANDS, changed=flags, meteor=False)
    assert out.unchanged is not None
    assert [r.image_id for r in out.unchanged.per_image] == ["p3"]
    with pytest.raises(ValueError, match="no flag for 1 pair"):
        change_caption_metrics(LEVIR_LIKE_REFS, LEVIR_LIKE_CANDS, changed={"p1": True, "p2": True, "p3": True,
                                                                            "p4": False}, meteor=False)  # fmt: skip


@needs_coco
def test_change_without_unchanged_pairs() -> None:
    refs = {k: LEVIR_LIKE_REFS[k] for k in ("p3", "p4")}
    out = change_caption_metrics(refs, {k: LEVIR_LIKE_CANDS[k] for k in refs}, meteor=False)
    assert out.unchanged is None and out.changed is not None
    assert out.no_change.recall is None and out.no_change.precision == 0.0 and out.no_change.f1 is None
    assert out.to_dict()["unchanged"] is None


# -------------------------------------------------------------------------------------------------- loading


def test_load_predictions_layouts(tmp_path: Path) -> None:
    coco = tmp_path / "results.json"
    coco.write_text(json.dumps([{"image_id": 1, "caption": "a road", "score": 0.3}, {"image_id": "b", "caption": ""}]))
    assert load_predictions(coco) == {"1": "a road", "b": ""}
    plain = tmp_path / "preds.json"
    plain.write_text(json.dumps({"x": "a river", "7": "trees"}))
    assert load_predictions(plain) == {"x": "a river", "7": "trees"}
    for name in ("preds.jsonl", "preds.txt"):
        lines = tmp_path / name
        lines.write_text('{"image_id": 3, "caption": "a"}\n\n{"image_id": 4, "caption": "b"}\n')
        assert load_predictions(lines) == {"3": "a", "4": "b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"image_id": 1, "caption": "a"}, {"image_id": "1", "caption": "b"}]', "more than once"),
        ('[{"id": 1, "caption": "a"}]', "'image_id' and 'caption'"),
        ('{"a": ["x"]}', "must be a string"),
        ('{"a": "x"', "not valid JSON"),
        ('{"image_id": 1, "caption": "a"}\n{"image_id": 2, ', "neither JSON nor JSON Lines"),
        ('"just a string"', "expected a JSON list"),
        ("[]", "no predictions"),
        ('[{"image_id": [1], "caption": "a"}]', "strings or integers"),
    ],
)
def test_load_predictions_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_predictions(path)


def test_load_predictions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_predictions(tmp_path / "nope.json")
