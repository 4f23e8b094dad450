"""Re-ranking indexes (compressed codes in RAM, exact float32 rows memory-mapped from vectors.npy), the build-time
calibration of nprobe, and the fast metadata / filter paths the searcher uses."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
pa = pytest.importorskip("pyarrow")

from geovl.cli import main as cli_main  # noqa: E402
from geovl.index.filters import Filters, MetadataTable  # noqa: E402
from geovl.index.manifest import VECTORS_FILE  # noqa: E402
from geovl.index.rerank import rerank  # noqa: E402
from geovl.index.search import Searcher  # noqa: E402
from geovl.index.store import add_to_index, build_index, load_index, remove_from_index  # noqa: E402
from tests.index_fixtures import clustered_unit_vectors, exact_topk, gappy_ids, recall, write_embeddings  # noqa: E402

N, NQ, K = 3000, 150, 10
VECS = clustered_unit_vectors(N + NQ, spread=1.2, seed=5)
BASE, QUERIES = VECS[:N], VECS[N:]
IDS = gappy_ids(N, start=10, seed=5)
# 4-bit codes lose much of the ordering among close neighbours: what re-ranking must give back
LOSSY = "IVF16,SQ4"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    faiss.omp_set_num_threads(1)


@pytest.fixture
def emb(tmp_path: Path) -> Path:
    return write_embeddings(tmp_path / "emb", BASE, IDS, partition_size=1200, shuffle_partition=1)


def _vector_of(ids: np.ndarray) -> np.ndarray:
    pos = {int(i): r for r, i in enumerate(IDS)}
    return BASE[[pos[int(i)] for i in ids]]


def test_rerank_restores_the_recall_compressed_codes_lose(tmp_path: Path, emb: Path) -> None:
    plain = build_index(emb, tmp_path / "plain", factory=LOSSY, nprobe=16, progress=False, calibrate=False)
    ranked = build_index(emb, tmp_path / "ranked", factory=LOSSY, nprobe=16, progress=False, calibrate=False,
                         rerank=True)
    assert not plain.params.rerank and plain.files["vectors"] is None
    assert ranked.params.rerank and ranked.params.k_factor == 3 and ranked.files["vectors"] == VECTORS_FILE
    # vectors.npy holds row i = the vector of the i-th smallest id (metadata order)
    rows = np.load(tmp_path / "ranked" / VECTORS_FILE)
    assert rows.dtype == np.float32 and np.array_equal(rows, _vector_of(np.sort(IDS)))

    exact = exact_topk(BASE, IDS, QUERIES, K)
    r_plain = recall(exact, load_index(tmp_path / "plain").search(QUERIES, K)[1])
    loaded = load_index(tmp_path / "ranked")
    scores, ids = loaded.search(QUERIES, K)
    r_ranked = recall(exact, ids)
    assert r_ranked >= 0.97 and r_ranked > r_plain + 0.05, (r_plain, r_ranked)
    # the scores are exact inner products, best first
    assert np.allclose(scores, np.einsum("qkd,qd->qk", _vector_of(ids.ravel()).reshape(NQ, K, -1), QUERIES),
                       atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)
    # the Searcher gives the same hits, one query at a time or in a batch; more candidates never hurt
    searcher = Searcher(tmp_path / "ranked")
    batch = np.array([[h.id for h in hits] for hits in searcher.search_batch(list(QUERIES), k=K)])
    single = np.array([[h.id for h in searcher.search(q, k=K)] for q in QUERIES[:20]])
    assert np.array_equal(batch, ids) and np.array_equal(single, ids[:20])
    wide = np.array([[h.id for h in hits] for hits in searcher.search_batch(list(QUERIES), k=K, k_factor=8)])
    assert recall(exact, wide) >= r_ranked


def test_exact_filtered_scoring_reads_the_float_rows(tmp_path: Path, emb: Path) -> None:
    build_index(emb, tmp_path / "idx", factory=LOSSY, progress=False, calibrate=False, rerank=True)
    searcher = Searcher(tmp_path / "idx", exact_threshold=10_000)
    allowed = np.zeros(N, bool)
    allowed[::7] = True
    keep = np.sort(IDS)[allowed]
    hits = searcher.search_batch(list(QUERIES[:30]), k=K, exclude_ids=np.setdiff1d(IDS, keep))
    assert searcher.plan(exclude_ids=np.setdiff1d(IDS, keep)).path == "exact"
    truth = exact_topk(_vector_of(keep), keep, QUERIES[:30], K)
    assert np.array_equal(np.array([[h.id for h in hs] for hs in hits]), truth)


def test_add_and_remove_keep_vectors_in_step(tmp_path: Path, emb: Path) -> None:
    out = tmp_path / "idx"
    build_index(emb, out, factory=LOSSY, progress=False, calibrate=False, rerank=True)
    new_vecs = clustered_unit_vectors(300, spread=1.2, seed=9)
    new_ids = np.arange(900_000, 900_300, dtype=np.int64)
    add_to_index(out, write_embeddings(tmp_path / "more", new_vecs, new_ids), progress=False)
    all_ids = np.concatenate([IDS, new_ids])
    all_vecs = np.concatenate([BASE, new_vecs])
    order = np.argsort(all_ids)
    assert np.array_equal(np.load(out / VECTORS_FILE), all_vecs[order])
    gone = np.concatenate([IDS[:50], new_ids[:10]])
    remove_from_index(out, gone)
    live = ~np.isin(all_ids[order], gone)
    assert np.array_equal(np.load(out / VECTORS_FILE), all_vecs[order][live])
    hits = Searcher(out).search(new_vecs[20], k=1)
    assert hits[0].id == new_ids[20] and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_broken_vectors_file_is_refused(tmp_path: Path, emb: Path) -> None:
    out = tmp_path / "idx"
    build_index(emb, out, factory=LOSSY, progress=False, calibrate=False, rerank=True)
    np.save(out / VECTORS_FILE, BASE[:10])
    with pytest.raises(ValueError, match=r"vectors\.npy holds .*rebuild"):
        load_index(out)
    (out / VECTORS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"vectors\.npy not found"):
        load_index(out)
    with pytest.raises(ValueError, match="exact already"):
        build_index(emb, tmp_path / "flat", factory="Flat", rerank=True, progress=False)
    with pytest.raises(ValueError, match="recall_target"):
        build_index(emb, tmp_path / "x", factory=LOSSY, recall_target=1.5, progress=False)


def test_calibration_widens_nprobe_to_the_target_and_info_prints_it(tmp_path: Path, emb: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    low = build_index(emb, tmp_path / "low", factory="IVF64,Flat", progress=False, recall_target=0.5)
    high = build_index(emb, tmp_path / "high", factory="IVF64,Flat", progress=False, recall_target=0.999)
    for m in (low, high):
        exp = m.expected
        assert exp["queries"] == 200 and exp["k"] == 10 and exp["nprobe"] == m.params.nprobe
        assert exp["sweep"][-1] == {"nprobe": m.params.nprobe, "recall_at_k": exp["recall_at_k"]}
        assert exp["p50_ms"] > 0 and exp["p99_ms"] >= exp["p50_ms"]
    assert low.params.nprobe == 4 and high.params.nprobe > low.params.nprobe
    assert high.expected["recall_at_k"] >= 0.999 or not high.expected["reached"]
    # widening stops at the first setting that reaches the target: the one before it fell short
    sweep = high.expected["sweep"]
    assert all(step["recall_at_k"] < 0.999 for step in sweep[:-1])
    # measured recall agrees with held-out queries searched at the chosen nprobe
    exact = exact_topk(BASE, IDS, QUERIES, K)
    assert recall(exact, load_index(tmp_path / "high").search(QUERIES, K)[1]) >= 0.97
    # an explicit nprobe is kept and only measured
    given = build_index(emb, tmp_path / "given", factory="IVF64,Flat", nprobe=2, progress=False)
    assert given.params.nprobe == 2 and [s["nprobe"] for s in given.expected["sweep"]] == [2]

    assert cli_main(["index", "info", str(tmp_path / "high")]) == 0
    out = capsys.readouterr()
    assert f"expected recall@10 {high.expected['recall_at_k']:.3f} at nprobe {high.params.nprobe}" in out.err
    assert json.loads(out.out)["expected"]["nprobe"] == high.params.nprobe
    assert cli_main(["index", "build", str(emb), "-o", str(tmp_path / "cli"), "--factory", LOSSY, "--rerank",
                     "--no-calibrate", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["params"]["rerank"] and printed["expected"] == {}


def test_rerank_pads_and_skips_missing_candidates() -> None:
    vectors = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.3, 0.0], [1.0, 0.0, 0.0, 0.0]], np.float32)
    ids = np.array([[10, 11, 12, -1], [13, -1, 10, 11]])
    rows = np.array([[0, 1, 2, -1], [3, -1, 0, 1]])
    scores, found = rerank(q, ids, rows, vectors, 3)
    assert found.tolist() == [[11, 12, 10], [10, 13, 11]] or found.tolist() == [[11, 12, 10], [10, 11, 13]]
    assert scores[0].tolist() == pytest.approx([0.9, 0.3, 0.1])
    one_s, one_i = rerank(q[:1], ids[:1], rows[:1], vectors, 5)  # fewer candidates than k: padded
    assert one_i.tolist() == [[11, 12, 10, -1, -1]] and np.isinf(one_s[0, 3:]).all()
    batch_s, batch_i = rerank(q[:1], ids[:1], rows[:1], vectors, 3)
    assert np.array_equal(batch_i, one_i[:, :3]) and np.allclose(batch_s, one_s[:, :3])


def test_fast_metadata_records_match_pyarrow() -> None:
    """Numeric, UTC-time and string columns are read through numpy; the rest (nulls, other zones, binary) through
    pyarrow: both give the same Python values."""
    when = [datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2021, 6, 30, 12, 5, tzinfo=timezone.utc), None]
    table = pa.table({
        "id": pa.array([3, 7, 9], pa.int64()),
        "path": pa.array(["a.png", "b/ü.png", "c.tif"]),
        "score": pa.array([0.5, 1.5, -2.0]),
        "count": pa.array([1, None, 3], pa.int32()),
        "acquired": pa.array([*when[:2], datetime(2022, 2, 2, tzinfo=timezone.utc)],
                             pa.timestamp("us", tz="UTC")),
        "local": pa.array(when, pa.timestamp("us", tz="Europe/Paris")),
        "label": pa.array(["x", None, "z"]),
        "geometry": pa.array([b"\x01", b"\x02", None], pa.binary()),
    })
    md = MetadataTable(table)
    for rows in ([0, 1, 2], [2, 0], [1]):
        expected = table.drop_columns(["id"]).take(pa.array(rows)).to_pylist()
        assert md.records(np.array(rows)) == expected
    sliced = MetadataTable(table.slice(1))  # a string column with a non-zero offset
    assert sliced.records(np.array([0, 1])) == table.slice(1).drop_columns(["id"]).to_pylist()


def test_records_of_low_and_high_cardinality_strings_match_pyarrow() -> None:
    """Few distinct strings are read through dictionary codes, many through their offsets, dictionary-typed columns
    directly: the same values as pyarrow's in every case."""
    n = 5000
    rng = np.random.default_rng(0)
    sensors = np.array(["s2", "l8", "naip", "wv3", "é-sat"])[rng.integers(0, 5, n)].tolist()
    table = pa.table({
        "id": pa.array(np.arange(n), pa.int64()),
        "path": pa.array([f"tiles/{i:05d}.tif" for i in range(n)]),
        "sensor": pa.array(sensors),
        "label": pa.array(sensors).dictionary_encode(),
        "late": pa.array(["same"] * (n - 200) + [f"rare-{i}" for i in range(200)]),  # missed by the probe
        "cloudy": pa.array(rng.random(n) < 0.3),
        "cloud": pa.array(rng.random(n).astype(np.float32)),
        "band": pa.array(rng.integers(0, 13, n).astype(np.uint8)),
        "note": pa.array([f"n{i % 97}-{i}" for i in range(n)], pa.large_string()),
    })
    md = MetadataTable(pa.concat_tables([table.slice(0, 1234), table.slice(1234)]))  # two chunks per column
    rows = rng.integers(0, n, 50)
    assert md.records(rows) == table.drop_columns(["id"]).take(pa.array(rows)).to_pylist()
    assert md.records(np.arange(n - 3, n)) == table.drop_columns(["id"]).slice(n - 3).to_pylist()
    assert md.records(rows[:1], drop=("id", "path", "cloud")) == (
        table.drop_columns(["id", "path", "cloud"]).take(pa.array(rows[:1])).to_pylist())


def test_string_membership_ignores_nulls_and_unknown_values() -> None:
    table = pa.table({"id": pa.array(range(6), pa.int64()),
                      "sensor": pa.array(["s2", None, "l8", "s2", "naip", None])})
    md = MetadataTable(table)
    assert md.mask(Filters.parse(where=["sensor=s2"])).tolist() == [True, False, False, True, False, False]
    assert md.mask(Filters(where={"sensor": ["l8", "naip", "nope"]})).tolist() == [False, False, True, False, True,
                                                                                  False]
    assert not md.mask(Filters.parse(where=["sensor=nope"])).any()


def test_bbox_filters_with_and_without_antimeridian_footprints() -> None:
    def table(lon_min: list[float], lon_max: list[float]) -> MetadataTable:
        n = len(lon_min)
        return MetadataTable(pa.table({"id": pa.array(range(n), pa.int64()), "lon_min": lon_min,
                                       "lat_min": [0.0] * n, "lon_max": lon_max, "lat_max": [1.0] * n}))

    plain = table([10.0, 20.0, -50.0], [11.0, 21.0, -49.0])
    assert plain.mask(Filters.parse(bbox="10.5,0,15,2")).tolist() == [True, False, False]
    assert plain.mask(Filters.parse(bbox="170,0,-40,2")).tolist() == [False, False, True]  # the box wraps
    wrapping = table([179.0, 20.0, float("nan")], [-179.0, 21.0, 1.0])  # the first footprint wraps
    assert wrapping.mask(Filters.parse(bbox="-179.5,0,-170,2")).tolist() == [True, False, False]
    assert wrapping.mask(Filters.parse(bbox="178,0,179.5,2")).tolist() == [True, False, False]
    assert wrapping.mask(Filters.parse(bbox="20.5,0,30,0.5")).tolist() == [False, True, False]


def test_single_vector_queries_match_the_batch_path_and_are_never_short(tmp_path: Path, emb: Path) -> None:
    """``search`` on one vector takes a path without masks or plans; when its one ANN search comes back short
    (nprobe 1 over lists smaller than k) it falls back to the general path, which widens the search."""
    build_index(emb, tmp_path / "idx", factory="IVF64,SQ8", nprobe=1, progress=False, calibrate=False, rerank=True)
    searcher = Searcher(tmp_path / "idx")
    for q in QUERIES[:10]:
        one = searcher.search(q, k=K)
        assert [(h.id, h.score, h.metadata) for h in one] == [
            (h.id, h.score, h.metadata) for h in searcher.search_batch([q], k=K)[0]]
    big = 200  # more than any one of the 64 lists holds
    hits = searcher.search(QUERIES[0], k=big)
    assert len(hits) == big and len({h.id for h in hits}) == big
    assert [h.rank for h in hits] == list(range(big))


def test_calibration_of_hnsw_and_flat_indexes(tmp_path: Path, emb: Path) -> None:
    """HNSW widens efSearch instead of nprobe; a Flat index is exact and is only timed."""
    hnsw = build_index(emb, tmp_path / "hnsw", factory="HNSW16", progress=False, recall_target=0.98)
    exp = hnsw.expected
    assert "efSearch" in exp and "nprobe" not in exp and exp["efSearch"] == hnsw.params.ef_search
    assert [set(step) for step in exp["sweep"]] == [{"efSearch", "recall_at_k"}] * len(exp["sweep"])
    assert exp["recall_at_k"] >= 0.98 or not exp["reached"]
    assert Searcher(tmp_path / "hnsw")._faiss.ef_search == hnsw.params.ef_search  # the default searches use it
    flat = build_index(emb, tmp_path / "flat", factory="Flat", progress=False)
    assert flat.expected["recall_at_k"] == 1.0 and flat.expected["reached"]
    assert "nprobe" not in flat.expected and "efSearch" not in flat.expected


def test_open_vectors_maps_the_file_as_numpy_would(tmp_path: Path) -> None:
    from geovl.index.rerank import open_vectors

    data = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", data)
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    for name in ("c.npy", "f.npy"):
        mapped = open_vectors(tmp_path / name)
        assert mapped.shape == (50, 8) and mapped.dtype == np.float32 and np.array_equal(mapped, data)
        assert not mapped.flags.writeable
    rows = np.array([3, 41, 7])
    assert np.array_equal(open_vectors(tmp_path / "c.npy")[rows], data[rows])
