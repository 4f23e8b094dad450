"""Index search: exactness and recall against brute force, filters, tombstones, text / image queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")
pa = pytest.importorskip("pyarrow")

from geovl.index.filters import Filters, Range  # noqa: E402
from geovl.index.search import Hit, Searcher  # noqa: E402
from tests import search_fixtures as sf  # noqa: E402
from tests.index_fixtures import clustered_unit_vectors, exact_topk  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread() -> Iterator[None]:
    import faiss  # one thread: training the wrapped types took 5x longer with threads on the shared test machine

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


N, DIM, K = 3000, 64, 10
IDS = 1000 + 3 * np.arange(N, dtype=np.int64)  # non-dense ids exercise the id <-> row mapping
VECTORS = sf.clustered_vectors(N, DIM, seed=0)
QUERIES = sf.near_queries(VECTORS, 20, seed=1)
TABLE = sf.synthetic_metadata(IDS, seed=0)


def _np(name: str) -> np.ndarray:
    col = TABLE.column(name)
    if pa.types.is_timestamp(col.type):
        return np.array([v.timestamp() if v is not None else np.nan for v in col.to_pylist()])
    return np.array([np.nan if v is None else v for v in col.to_pylist()], dtype=object if pa.types.is_string(
        col.type) else float)


def _intersects(lo_a: float, hi_a: float, lo_b: float, hi_b: float) -> bool:
    """Scalar reference: do two longitude spans (west > east wraps the antimeridian) overlap?"""
    def spans(lo: float, hi: float) -> list[tuple[float, float]]:
        return [(lo, hi)] if lo <= hi else [(lo, 180.0), (-180.0, hi)]

    return any(a0 <= b1 and a1 >= b0 for a0, a1 in spans(lo_a, hi_a) for b0, b1 in spans(lo_b, hi_b))


def bbox_reference(bbox: tuple[float, float, float, float]) -> np.ndarray:
    w, s, e, n = bbox
    lo, la, hi, ha = (_np(c) for c in ("lon_min", "lat_min", "lon_max", "lat_max"))
    return np.array([not np.isnan(lo[i]) and la[i] <= n and ha[i] >= s and _intersects(lo[i], hi[i], w, e)
                     for i in range(N)])


@pytest.fixture(scope="module")
def index_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("indexes")
    return {
        kind: sf.write_index_dir(root / kind.replace(",", "_"), VECTORS, ids=IDS, index_type=kind, metadata=TABLE,
                                 nprobe=8, ef_search=64)
        for kind in ("Flat", "HNSW32", "IVF32,Flat")
    }


def ids_of(hits: list[Hit]) -> list[int]:
    return [h.id for h in hits]


def recall(got: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / max(len(t), 1) for g, t in zip(got, truth, strict=True)]))


# ---------------------------------------------------------------- unfiltered


def test_flat_unfiltered_equals_exact_search(index_dirs: dict[str, Path]) -> None:
    searcher = Searcher(index_dirs["Flat"])
    results = searcher.search_batch(list(QUERIES), k=K)
    assert [ids_of(r) for r in results] == sf.exact_filtered(VECTORS, IDS, QUERIES, np.ones(N, bool), K)
    hit = results[0][0]
    assert hit.rank == 0 and np.isclose(hit.score, float(QUERIES[0] @ VECTORS[(hit.id - 1000) // 3]), atol=1e-5)
    assert hit.metadata["chip_id"] == f"c{hit.id}" and "id" not in hit.metadata
    assert [h.rank for h in results[0]] == list(range(K))


@pytest.mark.parametrize("kind", ["HNSW32", "IVF32,Flat"])
def test_ann_unfiltered_recall(index_dirs: dict[str, Path], kind: str) -> None:
    searcher = Searcher(index_dirs[kind])
    got = [ids_of(r) for r in searcher.search_batch(list(QUERIES), k=K)]
    assert recall(got, sf.exact_filtered(VECTORS, IDS, QUERIES, np.ones(N, bool), K)) >= 0.9
    assert all(len(g) == K for g in got)


# ---------------------------------------------------------------- filters against brute force

FILTER_CASES = {
    "bbox": (Filters(bbox=(-60.0, -30.0, 60.0, 30.0)), lambda: bbox_reference((-60.0, -30.0, 60.0, 30.0))),
    "dates": (Filters(start="2019-03-01", end=date(2020, 6, 30)),
              lambda: (_np("acquired") >= datetime(2019, 3, 1, tzinfo=timezone.utc).timestamp())
              & (_np("acquired") < datetime(2020, 7, 1, tzinfo=timezone.utc).timestamp())),
    "where": (Filters(where={"sensor": ["S2", "L8"], "gsd": (None, 10), "cloud": Range(lo=20, include_lo=False)}),
              lambda: np.isin(_np("sensor"), ["S2", "L8"]) & (_np("gsd") <= 10) & (_np("cloud") > 20)),
    "combined": (Filters(bbox=(0.0, -60.0, 180.0, 0.0), start=date(2018, 1, 1), where={"label": "forest"}),
                 lambda: bbox_reference((0.0, -60.0, 180.0, 0.0))
                 & (_np("acquired") >= datetime(2018, 1, 1, tzinfo=timezone.utc).timestamp())
                 & (_np("label") == "forest")),
}


@pytest.mark.parametrize("case", sorted(FILTER_CASES))
@pytest.mark.parametrize("kind", ["Flat", "HNSW32", "IVF32,Flat"])
def test_filters_match_brute_force(index_dirs: dict[str, Path], kind: str, case: str) -> None:
    filters, reference = FILTER_CASES[case]
    allowed = reference()
    assert 50 < allowed.sum() < N  # the case is a real filter
    searcher = Searcher(index_dirs[kind], exact_threshold=N)  # the selective (exact) path for every index kind
    assert searcher.plan(filters).path == "exact" and searcher.plan(filters).allowed == allowed.sum()
    got = [ids_of(r) for r in searcher.search_batch(list(QUERIES), k=K, filters=filters)]
    assert got == sf.exact_filtered(VECTORS, IDS, QUERIES, allowed, K)


@pytest.mark.parametrize("kind", ["HNSW32", "IVF32,Flat"])
def test_selector_path_returns_only_matches_with_high_recall(index_dirs: dict[str, Path], kind: str) -> None:
    filters, reference = FILTER_CASES["where"]
    allowed = reference()
    searcher = Searcher(index_dirs[kind], exact_threshold=0)
    assert searcher.plan(filters).path == "ann"
    got = [ids_of(r) for r in searcher.search_batch(list(QUERIES), k=K, filters=filters)]
    allowed_ids = set(IDS[allowed].tolist())
    assert all(len(g) == K and set(g) <= allowed_ids for g in got)
    assert recall(got, sf.exact_filtered(VECTORS, IDS, QUERIES, allowed, K)) >= 0.9


@pytest.mark.parametrize("kind", ["HNSW32", "IVF32,Flat"])
def test_filter_excluding_the_query_region_is_still_exact(index_dirs: dict[str, Path], kind: str) -> None:
    # The query's whole neighbourhood is filtered out (like a bbox over other landscapes): an ANN walk with a
    # selector would stay there, so the ANN path must notice and score these queries exactly.
    searcher = Searcher(index_dirs[kind], exact_threshold=0)
    for q in QUERIES[:5]:
        near = np.argsort(-(VECTORS @ q))[:300]
        allowed = np.ones(N, bool)
        allowed[near] = False
        assert searcher.plan(exclude_ids=IDS[near]).path == "ann"
        hits = searcher.search(q, k=K, exclude_ids=IDS[near])
        assert ids_of(hits) == sf.exact_filtered(VECTORS, IDS, q[None], allowed, K)[0]


@pytest.mark.parametrize("threshold", [0, None])
@pytest.mark.parametrize("kind", ["Flat", "HNSW32", "IVF32,Flat"])
def test_one_percent_filter_returns_full_top_k(index_dirs: dict[str, Path], kind: str, threshold: int | None) -> None:
    filters = Filters(where={"tile": [3, 50]})  # ~2 of 97 tiles, each 1% of the rows
    allowed = np.isin(IDS % 97, [3, 50])
    assert 0.01 < allowed.mean() < 0.03
    searcher = Searcher(index_dirs[kind], exact_threshold=threshold)
    got = [ids_of(r) for r in searcher.search_batch(list(QUERIES), k=K, filters=filters)]
    assert all(len(g) == K and np.isin(g, IDS[allowed]).all() for g in got)
    truth = sf.exact_filtered(VECTORS, IDS, QUERIES, allowed, K)
    if threshold is None or kind == "Flat":
        assert got == truth
    else:
        assert recall(got, truth) >= 0.8


@pytest.mark.parametrize("kind", ["Flat", "HNSW32", "IVF32,Flat"])
def test_filter_with_fewer_matches_than_k_returns_exactly_those(index_dirs: dict[str, Path], kind: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = [f"c{i}" for i in IDS[[5, 70, 900, 2999]]]
    searcher = Searcher(index_dirs[kind])
    monkeypatch.setattr("geovl.index.search._FAR_SHARE", 0.0)  # no shortcut to exact scoring on the ANN path
    for threshold in (0, 100):
        searcher.exact_threshold = threshold
        # nprobe 1 / efSearch 16 make the selector pass come back short: the retries and the exact fallback fill it
        for hits in searcher.search_batch(list(QUERIES[:5]), k=K, filters=Filters(where={"chip_id": wanted}),
                                          nprobe=1, ef_search=16):
            assert sorted(h.metadata["chip_id"] for h in hits) == sorted(wanted)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert searcher.search(QUERIES[0], k=K, filters=Filters(where={"chip_id": "nope"})) == []
    assert searcher.plan(Filters(where={"chip_id": "nope"})).path == "empty"


@pytest.mark.parametrize("id_style", ["dense", "sparse", "huge"])
@pytest.mark.parametrize("kind", ["Flat", "HNSW32", "IVF32,Flat", "IVF16,Flat on disk"])
def test_removed_ids_never_returned(tmp_path: Path, kind: str, id_style: str) -> None:
    n = 600
    # dense ids make the selector bitmap the row mask; huge ids need a hashed id batch instead of a bitmap
    ids = {"dense": np.arange(n), "sparse": IDS[:n], "huge": 2**40 + 7 * np.arange(n)}[id_style].astype(np.int64)
    vecs = VECTORS[:n]
    deleted = ids[::3]  # a third of the index, including every query's own vector below
    table = TABLE.slice(0, n).set_column(0, "id", pa.array(ids))
    folder = sf.write_index_dir(tmp_path / "idx", vecs, ids=ids, index_type=kind.removesuffix(" on disk"),
                                metadata=table, deleted=deleted, nprobe=4, on_disk=kind.endswith("on disk"))
    searcher = Searcher(folder)
    assert len(searcher) == n - deleted.size
    queries = list(vecs[::3][:10])
    live = ~np.isin(ids, deleted)
    # HNSW and on-disk lists keep removed vectors as tombstones, which every search masks out; Flat and IVF in RAM
    # delete them (faiss remove_ids), leaving plain searches.
    tombstones = searcher.manifest["removal"] == "tombstones"
    assert tombstones == (kind.startswith("HNSW") or kind.endswith("on disk"))
    assert searcher.plan().path == ("exact" if tombstones else "unfiltered")
    assert searcher.plan(exact=False).path == ("ann" if tombstones else "unfiltered")
    for filters in (None, Filters(where={"sensor": "S2"})):
        for exact in (None, False):
            results = searcher.search_batch(queries, k=50, filters=filters, exact=exact)
            for hits in results:
                assert len(hits) == 50 and not set(ids_of(hits)) & set(deleted.tolist())
    got = [ids_of(r) for r in searcher.search_batch(queries, k=K, exact=True)]
    assert got == sf.exact_filtered(vecs, ids, np.stack(queries), live, K)
    # asking for more than exist returns every live row once
    everything = searcher.search(queries[0], k=n)
    assert sorted(ids_of(everything)) == sorted(ids[live].tolist())


@pytest.mark.parametrize("kind", ["Flat", "HNSW32"])
def test_exact_scan_in_place_matches_gather(index_dirs: dict[str, Path], kind: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    filters, reference = FILTER_CASES["where"]
    searcher = Searcher(index_dirs[kind], exact_threshold=N)
    gathered = [ids_of(r) for r in searcher.search_batch(list(QUERIES), k=K, filters=filters)]
    monkeypatch.setattr("geovl.index.access.GATHER_MAX", 64)  # larger sets are scanned in place
    scanned = [ids_of(r) for r in searcher.search_batch(list(QUERIES), k=K, filters=filters)]
    assert gathered == scanned == sf.exact_filtered(VECTORS, IDS, QUERIES, reference(), K)


def test_exclude_ids_and_search_params(index_dirs: dict[str, Path]) -> None:
    searcher = Searcher(index_dirs["HNSW32"])
    own = int(IDS[7])
    first = searcher.search(VECTORS[7], k=5)
    assert first[0].id == own and first[0].score == pytest.approx(1.0, abs=1e-5)
    assert own not in ids_of(searcher.search(VECTORS[7], k=5, exclude_ids=[own]))
    assert len(searcher.search(VECTORS[7], k=5, ef_search=8)) == 5
    ivf = Searcher(index_dirs["IVF32,Flat"])
    assert ids_of(ivf.search(QUERIES[0], k=K, nprobe=32)) == sf.exact_filtered(
        VECTORS, IDS, QUERIES[:1], np.ones(N, bool), K)[0]


def test_ann_search_is_never_short(index_dirs: dict[str, Path]) -> None:
    hits = Searcher(index_dirs["IVF32,Flat"]).search(QUERIES[0], k=500, nprobe=1)  # one list holds ~100 vectors
    assert len(hits) == 500 and len(set(ids_of(hits))) == 500


def test_concurrent_searches_match_sequential(index_dirs: dict[str, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    searcher = Searcher(index_dirs["HNSW32"], exact_threshold=0)
    jobs = [(q, f) for q in QUERIES for f in (None, FILTER_CASES["where"][0], FILTER_CASES["bbox"][0])]
    sequential = [ids_of(searcher.search(q, k=K, filters=f)) for q, f in jobs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda job: ids_of(searcher.search(job[0], k=K, filters=job[1])), jobs))
    assert parallel == sequential


# ---------------------------------------------------------------- geo and time details


def test_antimeridian_bbox(index_dirs: dict[str, Path]) -> None:
    box = (179.0, -60.0, -179.0, 60.0)
    allowed = bbox_reference(box)
    lon_min, lon_max = _np("lon_min"), _np("lon_max")
    assert allowed.sum() > 10 and (lon_min > lon_max)[allowed].any()  # wrapping footprints are among the matches
    searcher = Searcher(index_dirs["Flat"])
    hits = searcher.search(QUERIES[0], k=N, filters=Filters(bbox=box))
    assert sorted(ids_of(hits)) == sorted(IDS[allowed].tolist())
    # a box just east of the antimeridian still finds the wrapping footprints (their east edge is -179.7)
    east = bbox_reference((-179.75, -60.0, -179.72, 60.0))
    assert (lon_min > lon_max)[east].any()
    assert searcher.plan(Filters(bbox=(-179.75, -60.0, -179.72, 60.0))).allowed == east.sum()


def test_rows_without_bounds_never_match_bbox(index_dirs: dict[str, Path]) -> None:
    searcher = Searcher(index_dirs["Flat"])
    hits = searcher.search(QUERIES[0], k=N, filters=Filters(bbox=(-180.0, -90.0, 180.0, 90.0)))
    no_bounds = np.isnan(_np("lon_min"))
    assert no_bounds.any() and len(hits) == N - no_bounds.sum()
    assert all(h.metadata["lon_min"] is not None for h in hits)


def test_date_filters_are_inclusive_and_utc(index_dirs: dict[str, Path]) -> None:
    searcher = Searcher(index_dirs["Flat"])
    t = _np("acquired")
    first = datetime.fromtimestamp(float(np.min(t)), tz=timezone.utc)
    naive = first.replace(tzinfo=None)
    assert searcher.plan(Filters(start=naive, end=naive)).allowed == 1  # naive datetimes are UTC
    day = first.date()
    in_day = (t >= datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()) & (
        t < datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() + 86400)
    assert searcher.plan(Filters(start=day, end=day.isoformat())).allowed == in_day.sum()
    assert searcher.plan(Filters(where={"acquired": day.isoformat()})).allowed == in_day.sum()
    assert searcher.plan(Filters(end=first.isoformat().replace("+00:00", "Z"))).allowed == 1
    in_cet = first.astimezone(timezone(timedelta(hours=1)))  # the same instant, written in another zone
    assert searcher.plan(Filters(start=in_cet, end=in_cet)).allowed == 1


# ---------------------------------------------------------------- errors and parsing


def test_filter_errors_name_the_problem(index_dirs: dict[str, Path]) -> None:
    searcher = Searcher(index_dirs["Flat"])
    with pytest.raises(ValueError, match=r"unknown column 'colour'.*available columns: id, path"):
        searcher.search(QUERIES[0], filters=Filters(where={"colour": "red"}))
    with pytest.raises(ValueError, match="'gsd' holds number values; 'ten' is not one"):
        searcher.search(QUERIES[0], filters=Filters(where={"gsd": "ten"}))
    with pytest.raises(ValueError, match="'sensor' holds string values"):
        searcher.search(QUERIES[0], filters=Filters(where={"sensor": 3}))
    with pytest.raises(ValueError, match="cannot be filtered"):
        searcher.search(QUERIES[0], filters=Filters(where={"geometry": b"x"}))
    with pytest.raises(ValueError, match=r"start .* is after end"):
        Filters(start="2021-01-01", end="2020-01-01")
    with pytest.raises(ValueError, match="latitudes"):
        Filters(bbox=(0, -100, 1, 1))
    with pytest.raises(ValueError, match="dimensions"):
        searcher.search(np.ones(DIM + 1, np.float32))
    with pytest.raises(ValueError, match="k must be"):
        searcher.search(QUERIES[0], k=0)


def test_filters_parse() -> None:
    f = Filters.parse(bbox="-10, 40, 5.5, 52", start="2020-01-01", end="2020-12-31T23:00:00Z",
                      where=["sensor=S2", "gsd<=10", "gsd>0.5", "label in forest, river", "chip_id == 'c1'"])
    assert f.bbox == (-10.0, 40.0, 5.5, 52.0)
    assert f.where == {"sensor": "S2", "gsd": Range(lo="0.5", hi="10", include_lo=False), "label": ["forest", "river"],
                       "chip_id": "c1"}
    for kwargs, part in [
        ({"bbox": "1,2,3"}, "bbox '1,2,3'"),
        ({"bbox": "1,2,x,4"}, "'x' is not a number"),
        ({"start": "2020-13-45"}, "start '2020-13-45'"),
        ({"end": "yesterday"}, "end 'yesterday'"),
        ({"where": ["gsd<<10"]}, "'gsd<<10'"),
        ({"where": ["sensor"]}, "'sensor' does not parse"),
        ({"where": ["label in "]}, "'label in '"),
        ({"where": ["gsd<=10", "gsd<5"]}, "'gsd<5'"),
        ({"where": ["sensor=S2", "sensor=L8"]}, "'sensor=L8'"),
    ]:
        with pytest.raises(ValueError, match=part.replace("(", r"\(")):
            Filters.parse(**kwargs)  # type: ignore[arg-type]


def test_parsed_filters_coerce_against_the_schema(index_dirs: dict[str, Path]) -> None:
    searcher = Searcher(index_dirs["Flat"])
    parsed = Filters.parse(where=["gsd<=10", "sensor in S2,L8", "cloud>20"])
    assert searcher.plan(parsed).allowed == searcher.plan(FILTER_CASES["where"][0]).allowed


def test_hit_to_dict_is_json(index_dirs: dict[str, Path]) -> None:
    hit = Searcher(index_dirs["Flat"]).search(QUERIES[0], k=1)[0]
    data = json.loads(json.dumps(hit.to_dict()))
    assert data["id"] == hit.id and data["metadata"]["acquired"].endswith("+00:00")
    assert isinstance(data["metadata"]["geometry"], (str, type(None)))


def test_hit_to_dict_makes_metadata_plain_json() -> None:
    meta = {"acquired": datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc), "day": date(2024, 5, 1),
            "geometry": b"\x01\x03", "cloud": float("nan"), "gsd": np.float32(10.0), "tags": ["a", None],
            "extra": {"k": np.float64("nan")}}
    assert Hit(id=7, score=0.5, rank=0, metadata=meta).to_dict() == {"id": 7, "score": 0.5, "rank": 0, "metadata": {
        "acquired": "2024-05-01T12:30:00+00:00", "day": "2024-05-01", "geometry": "0103", "cloud": None, "gsd": 10.0,
        "tags": ["a", None], "extra": {"k": None}}}


def test_mmap_and_missing_folder(index_dirs: dict[str, Path], tmp_path: Path) -> None:
    for kind in ("Flat", "HNSW32", "IVF32,Flat"):
        a = Searcher(index_dirs[kind], mmap=True).search(QUERIES[1], k=K)
        b = Searcher(index_dirs[kind]).search(QUERIES[1], k=K)
        assert ids_of(a) == ids_of(b)
    with pytest.raises(FileNotFoundError, match="no geovl index at"):
        Searcher(tmp_path)


def test_on_disk_ivf_lists_load_after_the_folder_moved(tmp_path: Path) -> None:
    n = 800
    folder = sf.write_index_dir(tmp_path / "idx", VECTORS[:n], ids=IDS[:n], index_type="IVF16,Flat",
                                metadata=TABLE.slice(0, n), on_disk=True)
    moved = folder.rename(tmp_path / "moved")
    assert (moved / "index.ivfdata").is_file()
    for mmap in (False, True):
        hits = Searcher(moved, mmap=mmap).search(QUERIES[0], k=K, nprobe=16)
        assert ids_of(hits) == sf.exact_filtered(VECTORS[:n], IDS[:n], QUERIES[:1], np.ones(n, bool), K)[0]


# ---------------------------------------------------------------- text and image queries


@pytest.fixture(scope="module")
def micro_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vecs = sf.clustered_vectors(400, 32, seed=3)
    return sf.write_index_dir(tmp_path_factory.mktemp("micro"), vecs, index_type="HNSW32", model=sf.MICRO_MODEL)


def test_text_query_loads_the_manifest_model(micro_index: Path) -> None:
    from geovl.models import create_backbone

    searcher = Searcher(micro_index, device="cpu")
    hits = searcher.search("a river through a forest", k=5)
    assert len(hits) == 5 and searcher.backbone.info.name == "random:geovl-micro"
    vec = create_backbone("geovl-micro", device="cpu").encode_texts(["a river through a forest"])[0]
    assert ids_of(Searcher(micro_index).search(vec, k=5)) == ids_of(hits)


def test_image_query_and_image_to_image(micro_index: Path) -> None:
    from PIL import Image

    from geovl.models import create_backbone

    backbone = create_backbone("geovl-micro", device="cpu")
    searcher = Searcher(micro_index, backbone=backbone)
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    vec = backbone.encode_images([image])[0]
    by_array = searcher.search(image, k=5)
    assert ids_of(by_array) == ids_of(searcher.search(vec, k=5))
    assert ids_of(searcher.search(Image.fromarray(image), k=5)) == ids_of(by_array)
    both = searcher.search_batch([image, "farmland"], k=5, exclude_ids=[by_array[0].id])
    assert [len(h) for h in both] == [5, 5] and by_array[0].id not in ids_of(both[0])


def test_mismatching_backbone_is_refused(micro_index: Path) -> None:
    from geovl.models import create_backbone

    with pytest.raises(ValueError, match=r"index built with model random:geovl-micro .*query encoder is "
                                         "random:geovl-micro-rn"):
        Searcher(micro_index, backbone=create_backbone("geovl-micro-rn", device="cpu"))
    with pytest.raises(ValueError, match="query encoder is random:geovl-micro-rn"):
        Searcher(micro_index, model="random:geovl-micro-rn", device="cpu").search("a road")


# ---------------------------------------------------------------- wrapped indexes: pre-transform, refine, HNSW

WN, WDIM = 2000, 32
W_IDS = 5 + 2 * np.arange(WN, dtype=np.int64)
W_VECTORS = clustered_unit_vectors(WN, WDIM, seed=0)  # clustered: on i.i.d. noise no ANN index has recall
W_QUERIES = clustered_unit_vectors(50, WDIM, seed=1)  # new draws from the same clusters
W_TRUTH = exact_topk(W_VECTORS, W_IDS, W_QUERIES, K)
WRAPPED = ("OPQ8,IVF16,PQ8", "IVF16,PQ8,RFlat", "HNSW16")


@pytest.fixture(scope="module")
def wrapped_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wrapped")
    return {f: sf.write_index_dir(root / f.replace(",", "_"), W_VECTORS, ids=W_IDS, index_type=f) for f in WRAPPED}


def _ids(results: list[list[Hit]]) -> np.ndarray:
    return np.array([ids_of(r) for r in results])


def _raw_search(folder: Path, **settings: int) -> np.ndarray:
    """Ids from the bare faiss index of ``folder`` with ``settings`` set on its inner objects (faiss
    ParameterSpace: ``nprobe``, ``efSearch``, ``k_factor_rf``), bypassing the Searcher."""
    import faiss

    from geovl.index.store import load_index

    index = load_index(folder, use_gpu=False).index
    for name, value in settings.items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    return np.asarray(index.search(W_QUERIES, K)[1])


def test_build_index_writes_the_wrapped_types(wrapped_dirs: dict[str, Path]) -> None:
    import faiss

    def down(index: Any) -> Any:
        return faiss.downcast_index(index)

    searchers = {f: Searcher(folder) for f, folder in wrapped_dirs.items()}  # they own the faiss objects below
    opq = down(searchers["OPQ8,IVF16,PQ8"].loaded.index)
    assert isinstance(opq, faiss.IndexPreTransform) and isinstance(down(opq.index), faiss.IndexIVFPQ)
    refine = down(searchers["IVF16,PQ8,RFlat"].loaded.index)
    assert isinstance(refine, faiss.IndexIDMap2) and isinstance(down(refine.index), faiss.IndexRefineFlat)
    assert isinstance(down(down(refine.index).base_index), faiss.IndexIVFPQ)
    hnsw = down(searchers["HNSW16"].loaded.index)
    assert isinstance(hnsw, faiss.IndexIDMap2) and isinstance(down(hnsw.index), faiss.IndexHNSWFlat)


@pytest.mark.parametrize("factory", WRAPPED)
def test_wrapped_indexes_memory_mapped_search_like_in_ram(wrapped_dirs: dict[str, Path], factory: str) -> None:
    ram, mapped = Searcher(wrapped_dirs[factory]), Searcher(wrapped_dirs[factory], mmap=True)
    assert np.array_equal(_ids(mapped.search_batch(list(W_QUERIES), k=K)), _ids(ram.search_batch(list(W_QUERIES), k=K)))


@pytest.mark.parametrize("factory", ["OPQ8,IVF16,PQ8", "IVF16,PQ8,RFlat"])
def test_nprobe_reaches_the_inner_ivf(wrapped_dirs: dict[str, Path], factory: str) -> None:
    import faiss

    searcher = Searcher(wrapped_dirs[factory])
    assert searcher.manifest["params"]["nprobe"] == 8  # the default, overridden below
    cvar: Any = faiss.cvar
    stats = cvar.indexIVF_stats
    for nprobe in (1, 4, 16):
        stats.reset()
        got = _ids(searcher.search_batch(list(W_QUERIES), k=K, nprobe=nprobe))
        # faiss counts the inverted lists it scanned: nprobe per query, in one pass
        assert (stats.nq, stats.nlist) == (len(W_QUERIES), nprobe * len(W_QUERIES))
        # the same results as the bare index with its inner IVF's nprobe set
        assert np.array_equal(got, _raw_search(wrapped_dirs[factory], nprobe=nprobe))
    # the per-call parameter leaves the index's own field (the manifest default) alone
    assert faiss.extract_index_ivf(searcher.loaded.index).nprobe == 8


def test_ef_search_reaches_the_inner_hnsw(wrapped_dirs: dict[str, Path]) -> None:
    import faiss

    searcher = Searcher(wrapped_dirs["HNSW16"])
    cvar: Any = faiss.cvar
    stats = cvar.hnsw_stats
    work = []
    for ef in (10, 32, 128):
        stats.reset()
        got = _ids(searcher.search_batch(list(W_QUERIES), k=K, ef_search=ef))
        work.append(stats.ndis)  # distances computed grow with the beam width
        assert np.array_equal(got, _raw_search(wrapped_dirs["HNSW16"], efSearch=ef))
    assert work[0] < work[1] < work[2]


def test_k_factor_reaches_the_refine_stage(wrapped_dirs: dict[str, Path]) -> None:
    folder = wrapped_dirs["IVF16,PQ8,RFlat"]
    searcher = Searcher(folder)
    assert searcher.manifest["params"]["k_factor"] == 4
    for k_factor in (1, 8):
        got = _ids(searcher.search_batch(list(W_QUERIES), k=K, nprobe=16, k_factor=k_factor))
        assert np.array_equal(got, _raw_search(folder, nprobe=16, k_factor_rf=k_factor))
    one, four = (recall(_ids(searcher.search_batch(list(W_QUERIES), k=K, nprobe=16, k_factor=f)).tolist(),
                        W_TRUTH.tolist()) for f in (1, 4))
    assert one < 0.85 < 0.95 <= four  # re-ranking 4k PQ candidates with the exact vectors recovers the top k
    with pytest.raises(ValueError, match="k_factor"):
        searcher.search(W_QUERIES[0], k_factor=0.5)


@pytest.mark.parametrize(("factory", "low", "high", "minimum"), [
    ("OPQ8,IVF16,PQ8", {"nprobe": 1}, {"nprobe": 16}, 0.65),  # 8-byte codes of 32-d vectors cap recall near 0.7
    ("IVF16,PQ8,RFlat", {"nprobe": 1}, {"nprobe": 16}, 0.95),
    ("HNSW16", {"ef_search": 10}, {"ef_search": 128}, 0.97),
])
def test_recall_grows_with_the_search_parameter(wrapped_dirs: dict[str, Path], factory: str, low: dict[str, Any],
                                                 high: dict[str, Any], minimum: float) -> None:
    searcher = Searcher(wrapped_dirs[factory])
    r_low = recall(_ids(searcher.search_batch(list(W_QUERIES), k=K, **low)).tolist(), W_TRUTH.tolist())
    r_high = recall(_ids(searcher.search_batch(list(W_QUERIES), k=K, **high)).tolist(), W_TRUTH.tolist())
    assert r_high >= minimum and r_high > r_low
    # the true nearest neighbour is among the 10 hits (1-recall@10) even where the codes blur the ranking
    top1 = _ids(searcher.search_batch(list(W_QUERIES), k=K, **high))
    assert np.mean([t in row for t, row in zip(W_TRUTH[:, 0], top1, strict=True)]) >= 0.95


def test_parameters_that_do_not_apply_are_ignored(wrapped_dirs: dict[str, Path]) -> None:
    hnsw = Searcher(wrapped_dirs["HNSW16"])
    assert np.array_equal(_ids(hnsw.search_batch(list(W_QUERIES), k=K, nprobe=1, k_factor=3)),
                          _ids(hnsw.search_batch(list(W_QUERIES), k=K)))
    ivf = Searcher(wrapped_dirs["OPQ8,IVF16,PQ8"])
    assert np.array_equal(_ids(ivf.search_batch(list(W_QUERIES), k=K, ef_search=500, k_factor=3)),
                          _ids(ivf.search_batch(list(W_QUERIES), k=K)))


@pytest.mark.parametrize("factory", WRAPPED)
def test_filtered_search_on_wrapped_indexes(wrapped_dirs: dict[str, Path], factory: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    table = sf.synthetic_metadata(W_IDS)  # the fixture's metadata
    allowed = np.isin(np.asarray(table.column("tile").to_numpy()), np.arange(6))  # ~6% of the rows
    filters = Filters(where={"tile": list(range(6))})
    truth = sf.exact_filtered(W_VECTORS, W_IDS, W_QUERIES, allowed, K)
    searcher = Searcher(wrapped_dirs[factory], exact_threshold=0)
    monkeypatch.setattr("geovl.index.search._FAR_SHARE", 0.0)  # the selector path, not the exact shortcut
    selectors: list[np.ndarray] = []
    make_selector = searcher._faiss.selector

    def counting_selector(mask: np.ndarray) -> tuple[Any, list[Any]]:
        selectors.append(mask)
        return make_selector(mask)

    monkeypatch.setattr(searcher._faiss, "selector", counting_selector)
    got = [ids_of(r) for r in searcher.search_batch(list(W_QUERIES), k=K, filters=filters, nprobe=16)]
    assert selectors  # an ANN search with an id selector ran (through the IDMap2 and refine stage where present)
    assert all(len(g) == K and np.isin(g, W_IDS[allowed]).all() for g in got)
    assert recall(got, truth) >= (0.6 if factory.startswith("OPQ") else 0.9)
    exact = [ids_of(r) for r in searcher.search_batch(list(W_QUERIES), k=K, filters=filters, exact=True)]
    assert all(len(g) == K and np.isin(g, W_IDS[allowed]).all() for g in exact)
    if not factory.startswith("OPQ"):  # exact scoring reads float vectors (refine stage, HNSW storage)
        assert exact == truth


def test_loaded_index_search_on_a_refine_type_skips_tombstones(tmp_path: Path) -> None:
    import faiss

    from geovl.index.store import load_index

    removed = W_IDS[:200]
    folder = sf.write_index_dir(tmp_path / "refine", W_VECTORS, ids=W_IDS, index_type="IVF16,PQ8,RFlat",
                                deleted=removed)
    loaded = load_index(folder, use_gpu=False)
    assert loaded.deleted.size == removed.size  # IVF under a refine stage cannot remove: tombstones
    cvar: Any = faiss.cvar
    stats = cvar.indexIVF_stats
    stats.reset()
    _, ids = loaded.search(W_VECTORS[:20], K, nprobe=3)
    assert stats.nlist == 3 * 20 and not np.isin(ids, removed).any() and (ids >= 0).all()
    hits = Searcher(folder).search_batch(list(W_VECTORS[:20]), k=K, exact=False)
    assert all(len(h) == K and not np.isin(ids_of(h), removed).any() for h in hits)
