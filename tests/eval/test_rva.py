"""Recall vs searched area: the exact area arithmetic against hand-worked cases and a raster count, the query file
checks, and `geovl eval rva` end to end over an index built from a synthetic georeferenced scene."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geovl.cli import main
from geovl.eval.rva import (
    EARTH_RADIUS_KM,
    area_grid,
    bbox_area_km2,
    eval_rva,
    format_rva_table,
    recall_vs_area,
    search_trace,
)
from geovl.eval.rva_queries import read_rva_queries

pytestmark = pytest.mark.usefixtures("one_torch_thread")

R = 6371.0072  # authalic radius, km: written out so that a changed constant fails here


def zone(w: float, s: float, e: float, n: float) -> float:
    """Spherical area of a lon/lat box (no antimeridian), km², straight from R² Δλ (sin φ2 − sin φ1)."""
    return R ** 2 * math.radians(e - w) * (math.sin(math.radians(n)) - math.sin(math.radians(s)))


UNIT = zone(0, 0, 1, 1)  # a 1° box on the equator, ~12,364 km²

# ---------------------------------------------------------------- areas


def test_box_area_is_the_spherical_zone_formula() -> None:
    assert EARTH_RADIUS_KM == R
    assert bbox_area_km2((0, 0, 1, 1)) == pytest.approx(12363.71, abs=0.01)
    assert bbox_area_km2((10, 60, 11, 61)) == pytest.approx(zone(10, 60, 11, 61), rel=1e-12)
    assert bbox_area_km2((10, 60, 11, 61)) < 0.5 * UNIT  # meridians converge
    assert bbox_area_km2((179, 0, -179, 1)) == pytest.approx(2 * UNIT, rel=1e-12)  # across the antimeridian
    assert bbox_area_km2((-180, -90, 180, 90)) == pytest.approx(4 * math.pi * R ** 2, rel=1e-12)
    with pytest.raises(ValueError, match="north of lat_max"):
        bbox_area_km2((0, 2, 1, 1))


def test_disjoint_chips_add_up_and_the_target_is_covered_by_its_chip() -> None:
    t = search_trace([(0, 0, 1, 1), (1, 0, 2, 1), (2, 0, 3, 1)], (2, 0, 3, 1))
    assert t.area_km2 == pytest.approx([UNIT, 2 * UNIT, 3 * UNIT], rel=1e-12)
    assert t.covered == pytest.approx([0, 0, 1])


def test_overlapping_chips_are_not_double_counted() -> None:
    chips = [(0, 0, 2, 2), (1, 1, 3, 3), (0, 0, 2, 2), (0.5, 0.5, 1.5, 1.5), None, (float("nan"),) * 4]
    t = search_trace(chips, (5, 5, 6, 6))
    first = zone(0, 0, 2, 2)
    union = first + zone(1, 1, 3, 3) - zone(1, 1, 2, 2)  # inclusion-exclusion
    # a repeated chip, a chip inside the union and chips without footprints add nothing
    assert t.area_km2 == pytest.approx([first, union, union, union, union, union], rel=1e-12)
    assert not t.covered.any()


def test_union_matches_a_raster_count_of_random_boxes() -> None:
    """Random boxes on a 0.25° lattice: the union is exactly the lattice cells they cover, each cell's area from
    the zone formula; an independent count of what the edge grid computes."""
    rng = np.random.default_rng(0)
    cells = np.zeros((40, 40), bool)  # lon 0..10, lat 40..50 in 0.25° cells
    cell_area = np.array([[zone(0, 40 + j / 4, 0.25, 40 + (j + 1) / 4) for j in range(40)]] * 40)
    chips, expected = [], []
    for _ in range(30):
        i0, j0 = rng.integers(0, 36, 2)
        i1, j1 = i0 + rng.integers(1, 5), j0 + rng.integers(1, 5)
        chips.append((i0 / 4, 40 + j0 / 4, i1 / 4, 40 + j1 / 4))
        cells[i0:i1, j0:j1] = True
        expected.append(cell_area[cells].sum())
    t = search_trace(chips, (2, 42, 3, 43))
    assert t.area_km2 == pytest.approx(expected, rel=1e-9)
    assert np.all(np.diff(t.area_km2) >= 0)


def test_cover_threshold() -> None:
    chips = [(0, 0, 0.8, 1), (1.5, -1, 3, 2), (0.8, 0, 1.2, 1), (1.2, 0, 2, 1)]
    t = search_trace(chips, (0, 0, 2, 1))  # at equal latitudes, the covered share is the longitude share
    assert t.covered == pytest.approx([0.4, 0.65, 0.85, 1.0], rel=1e-9)
    for cover, rank in ((0.3, 1), (0.5, 2), (0.8, 3), (1.0, 4)):
        outcome = recall_vs_area([chips], [(0, 0, 2, 1)], cover=cover).outcomes[0]
        assert outcome.chips_to_find == rank
        assert outcome.area_to_find_km2 == pytest.approx(t.area_km2[rank - 1])
    # a chip that exactly covers a target reaches cover=1 despite rounding
    assert recall_vs_area([[(10, 45.1, 10.3, 45.7)]], [(10, 45.1, 10.3, 45.7)], cover=1.0).outcomes[0].found


def test_point_target_is_found_by_the_chip_that_contains_it() -> None:
    t = search_trace([(5, 5, 6, 6), (0, 0, 1, 1), (0.5, 0.5, 2, 2)], (1, 1))  # on the second chip's corner
    assert t.covered.tolist() == [0, 1, 1]
    outcome = recall_vs_area([[(5, 5, 6, 6), (0, 0, 1, 1)]], [(1, 1)]).outcomes[0]
    assert outcome.chips_to_find == 2
    assert outcome.area_to_find_km2 == pytest.approx(zone(5, 5, 6, 6) + UNIT, rel=1e-12)
    assert search_trace([(179, 0, -179, 1)], (-180, 0.5)).covered.tolist() == [1]  # -180 is 180
    assert search_trace([(0, 0, 1, 1)], (1.5, 0.5)).covered.tolist() == [0]


def test_recall_curve_area_at_recall_and_auc() -> None:
    a = UNIT
    rankings: list[list[Any]] = [
        [(0, 0, 1, 1)],  # found at a
        [(1, 0, 2, 1), (0, 0, 1, 1)],  # found at 2a
        [(1, 0, 2, 1), (2, 0, 3, 1), (0, 0, 1, 1), (3, 0, 4, 1)],  # found at 3a
        [(1, 0, 2, 1), (2, 0, 3, 1), (3, 0, 4, 1), (4, 0, 5, 1)],  # never found
    ]
    res = recall_vs_area(rankings, [(0.5, 0.5)] * 4, ids=["a", "b", "c", "d"], area_range=(a, 4 * a))
    assert [o.chips_to_find for o in res.outcomes] == [1, 2, 3, None]
    assert [o.area_to_find_km2 for o in res.outcomes[:3]] == pytest.approx([a, 2 * a, 3 * a], rel=1e-12)
    never = res.outcomes[3]
    assert (never.found, never.area_to_find_km2, never.best_cover) == (False, None, 0.0)
    assert never.searched_km2 == pytest.approx(4 * a, rel=1e-12)
    assert res.found == 3
    assert res.area_at_recall[0.5] == pytest.approx(2 * a)  # 2 of 4 found by 2a
    assert res.area_at_recall[0.9] is None  # 4 of 4 are never found
    assert (res.recall_at(2 * a), res.recall_at(1.999 * a), res.recall_at(1e9)) == (0.5, 0.25, 0.75)
    assert res.area_km2[0] == pytest.approx(a) and res.area_km2[-1] == pytest.approx(4 * a)
    assert np.all(np.diff(res.area_km2) > 0) and np.all(np.diff(res.recall) >= 0)
    assert res.recall.tolist() == [sum(x <= g * (1 + 1e-9) for x in (a, 2 * a, 3 * a)) / 4 for g in res.area_km2]
    auc = (0.25 * math.log(2) + 0.5 * math.log(1.5) + 0.75 * math.log(4 / 3)) / math.log(4)
    assert res.auc_log_area == pytest.approx(auc, rel=1e-9)
    assert res.exact_up_to_km2 == pytest.approx(a)  # the first query was inspected one chip deep


def test_default_range_is_snapped_to_preferred_numbers() -> None:
    res = recall_vs_area([[(0, 0, 1, 1), (1, 0, 2, 1)]], [(1.5, 0.5)])  # 12,364 and 24,727 km²
    assert res.area_range_km2 == (10_000.0, 25_000.0)
    assert res.area_km2.tolist() == [10_000.0, 12_500.0, 16_000.0, 20_000.0, 25_000.0]
    assert res.recall.tolist() == [0, 0, 0, 0, 1]
    assert area_grid(0.3, 0.3).tolist() == [0.3]
    assert recall_vs_area([[None]], [(1, 1)]).area_range_km2 is None  # no chip had an area


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cover": 0.0}, r"cover must be in \(0, 1\]"),
    ({"cover": 1.5}, r"cover must be in \(0, 1\]"),
    ({"targets": [(0, 0, 1, 1)] * 2}, "one ranking and one target"),
    ({"targets": [(0, 0, 0, 1)]}, "no area; give"),
    ({"targets": [(0, 0, 1)]}, "target must be"),
    ({"rankings": [[(0, 1, 1, 0)]]}, "chip 0 .* north of lat_max"),
    ({"rankings": [[(0, 0, 200, 1)]]}, "longitudes must be in"),
    ({"area_range": (10.0, 1.0)}, "0 < min <= max"),
])
def test_metric_input_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"rankings": [[(0, 0, 1, 1)]], "targets": [(0, 0, 1, 1)], **kwargs}
    with pytest.raises(ValueError, match=message):
        recall_vs_area(args.pop("rankings"), args.pop("targets"), **args)


# ---------------------------------------------------------------- query files


def test_query_files_jsonl_and_csv(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "q.png").write_bytes(b"png")
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"id": "a", "text": "a lake", "lon_min": 179, "lat_min": 1, "lon_max": -179, "lat_max": 2}\n'
                     "\n"
                     '{"image": "img/q.png", "lon": 10.5, "lat": -3, "lon_min": null}\n')
    a, b = read_rva_queries(jsonl)
    assert (a.id, a.text, a.image, a.target, a.query) == ("a", "a lake", None, (179, 1, -179, 2), "a lake")
    assert (b.id, b.text, b.image, b.target) == ("3", None, tmp_path / "img" / "q.png", (10.5, -3))
    csv_file = tmp_path / "q.csv"
    csv_file.write_text("id,text,image,lon_min,lat_min,lon_max,lat_max,lon,lat\n"
                        "x,a port,,1,2,3,4,,\n"
                        "7,,img/q.png,,,,,5,6\n")
    x, y = read_rva_queries(csv_file)
    assert (x.id, x.text, x.target) == ("x", "a port", (1, 2, 3, 4))
    assert (y.id, y.image, y.target) == ("7", tmp_path / "img" / "q.png", (5, 6))


BOX = '"lon_min": 0, "lat_min": 0, "lon_max": 1, "lat_max": 1'


@pytest.mark.parametrize(("lines", "message"), [
    ([f'{{"text": "a", {BOX}}}', "{oops"], ":2: not valid JSON"),
    (["[1, 2]"], ":1: expected a JSON object"),
    ([f'{{"text": "a", "image": "b.png", {BOX}}}'], "line 1: give 'text' or 'image', not both"),
    ([f'{{"id": "q", {BOX}}}'], "line 1: no query"),
    ([f'{{"text": "", {BOX}}}'], "line 1, field 'text': expected a non-empty string"),
    (['{"text": "a", "lon_min": 0, "lat_min": 0, "lon_max": 1}'], "line 1, field 'lat_max': missing"),
    (['{"text": "a", "lon": 1}'], "line 1, field 'lat': missing"),
    (['{"text": "a"}'], "line 1: no target"),
    ([f'{{"text": "a", "lon": 1, "lat": 2, {BOX}}}'], "line 1: give a box .* not both"),
    (['{"text": "a", "lon": "east", "lat": 2}'], "line 1, field 'lon': expected a number"),
    (['{"text": "a", "lon": true, "lat": 2}'], "line 1, field 'lon': expected a number"),
    (['{"text": "a", "lon": 1, "lat": 95}'], r"line 1, field 'lat': 95.0 is outside \[-90, 90\]"),
    (['{"text": "a", "lon_min": 0, "lat_min": 2, "lon_max": 1, "lat_max": 1}'], "field 'lat_max': .* north"),
    (['{"text": "a", "lon_min": 3, "lat_min": 0, "lon_max": 3, "lat_max": 1}'], "field 'lon_max': equals lon_min"),
    ([f'{{"text": "a", "lonmin": 0, {BOX}}}'], "line 1, field 'lonmin': unknown field"),
    ([f'{{"id": "q", "text": "a", {BOX}}}', f'{{"id": "q", "text": "b", {BOX}}}'],
     "line 2, field 'id': duplicate id 'q' \\(first on line 1\\)"),
    ([f'{{"id": 1.5, "text": "a", {BOX}}}'], "line 1, field 'id': expected a string or an integer"),
    ([f'{{"image": "missing.png", {BOX}}}'], "line 1, field 'image': .*missing.png is not a file"),
    (["", "  "], "no queries"),
])
def test_query_file_errors_name_the_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_rva_queries(path)


def test_csv_errors_count_the_header_line(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("text,lon,lat\na,1,2\nb,1,north\n")
    with pytest.raises(ValueError, match=r"q.csv, line 3, field 'lat': expected a number"):
        read_rva_queries(path)
    path.write_text("text,lon,lat\na,1,2,3\n")
    with pytest.raises(ValueError, match="line 2: more cells than the header"):
        read_rva_queries(path)
    with pytest.raises(FileNotFoundError):
        read_rva_queries(tmp_path / "none.jsonl")


# ---------------------------------------------------------------- end to end over a synthetic scene

TILE, GRID, PIXEL = 64, 4, 0.001  # 4 x 4 synthetic tiles of 64 px, 0.001° per pixel
WEST, NORTH = 10.0, 46.0


def tile_box(r: int, c: int) -> tuple[float, float, float, float]:
    side = TILE * PIXEL
    return WEST + c * side, NORTH - (r + 1) * side, WEST + (c + 1) * side, NORTH - r * side


@pytest.fixture(scope="module")
def scene_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """An index of the 16 chips of a georeferenced mosaic of synthetic tiles (EPSG:4326), and the tiles' captions."""
    pytest.importorskip("faiss")
    pytest.importorskip("rasterio")
    from PIL import Image

    from geovl.data.synthetic import SceneConfig, generate_scene
    from geovl.io.geotiff_writer import write_geotiff

    root = tmp_path_factory.mktemp("rva")
    mosaic = np.zeros((GRID * TILE, GRID * TILE, 3), np.uint8)
    captions = []
    for i in range(GRID * GRID):
        tile = generate_scene(seed=0, index=i, config=SceneConfig(size=TILE))
        r, c = divmod(i, GRID)
        mosaic[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile.image
        captions.append(tile.captions[0])
    Image.fromarray(mosaic[TILE:2 * TILE, TILE:2 * TILE]).save(root / "tile5.png")  # the image query: tile (1, 1)
    write_geotiff(root / "scene.tif", mosaic.transpose(2, 0, 1), crs="EPSG:4326",
                  transform=(PIXEL, 0.0, WEST, 0.0, -PIXEL, NORTH))
    model = ["--model", "random:geovl-micro", "--precision", "fp32", "--device", "cpu"]
    assert main(["embed", str(root / "scene.tif"), *model, "--chip-size", str(TILE), "--workers", "0", "-q",
                 "--out", str(root / "emb")]) == 0
    assert main(["index", "build", str(root / "emb"), "--out", str(root / "idx"), "-q"]) == 0
    return root, captions


def _box(box: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(("lon_min", "lat_min", "lon_max", "lat_max"), box, strict=True))


def test_eval_rva_command_end_to_end(scene_index: tuple[Path, list[str]], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from geovl.index.search import Searcher

    root, captions = scene_index
    two_tiles = (tile_box(3, 0)[0], tile_box(3, 0)[1], tile_box(3, 1)[2], tile_box(3, 1)[3])  # tiles 12 and 13
    centre = tile_box(2, 2)
    queries = [
        {"id": "image", "image": str(root / "tile5.png"), **_box(tile_box(1, 1))},
        {"id": "caption", "text": captions[3], **_box(tile_box(0, 3))},
        {"id": "point", "text": captions[10], "lon": (centre[0] + centre[2]) / 2, "lat": (centre[1] + centre[3]) / 2},
        {"id": "half", "text": "farmland and a road", **_box(two_tiles)},
        {"id": "far", "text": "a harbour", **_box((50, 0, 51, 1))},
    ]
    qfile = tmp_path / "queries.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in queries))
    out = tmp_path / "report"
    assert main(["eval", "rva", str(root / "idx"), str(qfile), "--max-chips", "16", "--device", "cpu",
                 "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((out / "rva.json").read_text())
    assert summary["task"] == report["task"] == "rva"
    assert Path(summary["report"]["plot"]) == out / "rva_recall_area.png"
    assert (out / "rva_recall_area.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "rva.md").is_file() and report["details"]["plot"] == "rva_recall_area.png"

    # Independently: rank with the same model, then sum the areas of the disjoint chips down to the target's.
    searcher = Searcher(root / "idx", device="cpu")
    hits = searcher.search_batch([Path(queries[0]["image"]), *(q["text"] for q in queries[1:])], k=16)
    boxes = [[tuple(h.metadata[k] for k in ("lon_min", "lat_min", "lon_max", "lat_max")) for h in hs] for hs in hits]
    areas = [np.cumsum([zone(*b) for b in bs]) for bs in boxes]

    def rank_of(q: int, box: tuple[float, ...]) -> int:
        return next(i for i, b in enumerate(boxes[q]) if np.allclose(b, box, atol=1e-9))

    expected_ranks = [rank_of(0, tile_box(1, 1)), rank_of(1, tile_box(0, 3)), rank_of(2, centre),
                      min(rank_of(3, tile_box(3, 0)), rank_of(3, tile_box(3, 1)))]  # each tile covers half
    assert expected_ranks[0] == 0  # the image query finds its own chip first
    per_query = {row["id"]: row for row in report["details"]["per_query"]}
    for q, rank in enumerate(expected_ranks):
        row = per_query[queries[q]["id"]]
        assert row["found"] and row["chips_to_find"] == rank + 1
        assert row["area_to_find_km2"] == pytest.approx(areas[q][rank], rel=1e-9)
    far = per_query["far"]
    assert (far["found"], far["area_to_find_km2"], far["chips"]) == (False, None, 16)
    assert far["searched_km2"] == pytest.approx(areas[4][-1], rel=1e-9)

    found = sorted(areas[q][rank] for q, rank in enumerate(expected_ranks))
    figures = report["figures"]
    assert figures["queries"] == 5 and figures["recall@max_chips"] == pytest.approx(80.0)
    assert figures["area_km2@recall50"] == pytest.approx(found[2], rel=1e-9)  # 3 of 5 queries
    assert figures["area_km2@recall90"] is None  # 5 of 5 are never found
    assert report["units"]["area_km2@recall50"] == "km²"
    assert any("90% recall is not reached" in note for note in report["details"]["notes"])
    curve = report["details"]["curve"]
    assert [p["recall"] for p in curve] == sorted(p["recall"] for p in curve) and curve[-1]["recall"] == 80.0
    assert report["settings"]["max_chips"] == 16 and report["dataset"]["counts"] == {"chips": 16, "queries": 5}
    table = format_rva_table(eval_rva(searcher, qfile, max_chips=16, progress=False))
    assert "area_km2@recall90: not reached" in table and "recall@max_chips: 80.0% of 5" in table


def test_eval_rva_refuses_bad_arguments(scene_index: tuple[Path, list[str]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = scene_index
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"text": "a", "lon": 10.1, "lat": 45.9}\n')
    with pytest.raises(ValueError, match="max_chips must be a positive integer"):
        eval_rva(root / "idx", qfile, max_chips=0)
    for flags, message in ((["--area-range", "5"], "--area-range must be MIN,MAX"),
                           (["--cover", "2"], "cover must be in"),):
        assert main(["eval", "rva", str(root / "idx"), str(qfile), "-q", "--out", str(tmp_path / "o"), *flags]) == 1
        assert message in capsys.readouterr().err


def test_eval_rva_needs_chip_footprints(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from tests.index_fixtures import metadata_table
    from tests.search_fixtures import clustered_vectors, write_index_dir

    ids = np.arange(20, dtype=np.int64)
    index = write_index_dir(tmp_path / "idx", clustered_vectors(20, 32), metadata=metadata_table(ids, extra=False))
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"text": "a", "lon": 1, "lat": 2}\n')
    with pytest.raises(ValueError, match="no chip footprints"):
        eval_rva(index, qfile)
