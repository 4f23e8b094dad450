"""Captioning an index's collection and attaching the captions to its metadata (geovl.index.captions): the inputs
follow the index rows (chips re-cut as indexed), captions land on the right rows and are searchable with a where
filter, re-attaching replaces them, missing images are recorded failures, and the index is never half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geovl.data.sources import ChipRef, DatasetSource, FolderSource, SceneSource, sources_for
from geovl.index.captions import (
    attach_captions,
    index_sources,
    is_collection_folder,
    is_embeddings_folder,
    is_index_folder,
)
from geovl.index.filters import Filters, Like, MetadataTable
from geovl.index.manifest import IndexManifest
from geovl.index.pipeline import EmbedConfig, run_embed
from geovl.index.store import build_index, remove_from_index
from geovl.models.captioner import load_captioner
from geovl.tasks.captioning.batch import CaptionRunConfig, read_captions, run_captions
from tests.caption_fixtures import make_tiny_captioner
from tests.index_fixtures import folder_bytes, leftovers

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("faiss")

CHIP = 64


def _images(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.png")
    return root


def _scene(path: Path, size: int = 3 * CHIP) -> Path:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = np.random.default_rng(1).integers(200, 3000, (3, size, size), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(data)
    return path


class World:
    """A small index (images + chips of one scene) embedded with a tiny captioner's own backbone."""

    def __init__(self, root: Path, captioner: Any, backbone: Any, sources: list[Any]) -> None:
        self.root, self.captioner, self.backbone = root, captioner, backbone
        self.captioner_folder: Path | None = None
        self.embeddings, self.index = root / "emb", root / "index"
        run_embed(backbone, sources, self.embeddings, EmbedConfig(workers=0, progress=False, batch_size=8))
        build_index(self.embeddings, self.index, factory="Flat", use_gpu=False, progress=False)

    def metadata(self, index: Path | None = None) -> list[dict[str, Any]]:
        return list(pq.read_table((index or self.index) / "metadata.parquet").to_pylist())

    def caption(self, sources: list[Any], out: Path, **config: Any) -> Any:
        cfg = CaptionRunConfig(workers=0, progress=False, batch_size=4, partition_size=5, **config)
        return run_captions(self.captioner, sources, out, cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("captions")
    tiny = make_tiny_captioner(root / "model")
    captioner = load_captioner(str(tiny.folder), backbone=tiny.backbone, device="cpu", precision="fp32")
    imgs = _images(root / "imgs", 6)
    (imgs / "img_02_bad.png").write_bytes(b"")  # unreadable: leaves a gap in the ids (3), so ids != positions
    sources = [FolderSource([imgs]), SceneSource([_scene(root / "scene.tif")], size=CHIP)]
    made = World(root, captioner, tiny.backbone, sources)
    made.captioner_folder = tiny.folder
    return made


def test_folders_are_recognised(world: World, tmp_path: Path) -> None:
    assert is_index_folder(world.index) and not is_index_folder(world.embeddings)
    assert is_embeddings_folder(world.embeddings) and not is_embeddings_folder(world.index)
    assert is_collection_folder(world.index) and is_collection_folder(world.embeddings)
    (tmp_path / "manifest.json").write_text("{not json")
    assert not is_collection_folder(tmp_path) and not is_collection_folder(world.root / "imgs")
    with pytest.raises(ValueError, match="neither a geovl index nor an embeddings folder"):
        index_sources(world.root / "imgs")


def test_sources_follow_the_index_rows_and_recut_chips_as_indexed(world: World) -> None:
    rows = world.metadata()
    assert 3 not in {r["id"] for r in rows} and len(rows) == 15
    (source,) = index_sources(world.index)
    records = list(source.records())
    assert [r.meta["index_id"] for r in records] == [r["id"] for r in rows]
    assert [r.meta["path"] for r in records] == [r["path"] for r in rows]
    readers = source.chip_readers()
    chips = [(rec, row) for rec, row in zip(records, rows, strict=True) if row.get("chip_id")]
    assert len(chips) == 9 and len(readers) == 1  # 3 x 3 chips of the one scene
    for rec, row in chips:
        assert isinstance(rec.image, ChipRef)
        chip = readers[rec.image.scene].read(rec.image.row, rec.image.col)
        assert chip.chip_id == row["chip_id"] and chip.window == (row["col_off"], row["row_off"], CHIP, CHIP)
    assert all(isinstance(rec.image, str) and Path(rec.image).is_file() for rec in records if not rec.meta.get(
        "chip_id"))
    # the same collection through its embeddings folder, and a description that changes when the rows do
    (again,) = index_sources(world.embeddings)
    assert [r.meta["index_id"] for r in again.records()] == [r["id"] for r in rows]
    assert source.describe()["rows_sha256"] == again.describe()["rows_sha256"]


def test_attached_captions_are_searchable_and_reattaching_replaces_them(world: World, tmp_path: Path) -> None:
    from geovl.index.search import Searcher

    index = tmp_path / "index"
    shutil.copytree(world.index, index)
    run = tmp_path / "run"
    summary = world.caption(index_sources(index), run)
    assert (summary.captioned, summary.failed) == (15, 0)
    captions = {r["index_id"]: r["caption"] for r in read_captions(run)}
    report = attach_captions(index, run)
    assert report == {"index": str(index), "run": str(run), "column": "caption", "matched": 15, "unmatched": 0,
                      "uncaptioned": 0, "complete": True}
    assert {r["id"]: r["caption"] for r in world.metadata(index)} == captions
    provenance = IndexManifest.load(index).captions["caption"]
    assert provenance["model"] == json.loads((run / "manifest.json").read_text())["model"]["name"]
    assert provenance["run"] == str(run.resolve()) and provenance["matched"] == 15

    lower = {i: c.lower() for i, c in captions.items()}
    words = sorted({w.strip(".") for c in lower.values() for w in c.split() if len(w) > 3})
    word = next(w for w in words if 0 < sum(w in c for c in lower.values()) < len(captions))
    searcher = Searcher(index, backbone=world.backbone)
    hits = searcher.search("a river", k=50, filters=Filters.parse(where=[f"caption contains {word.upper()}"]))
    assert {h.id for h in hits} == {i for i, c in lower.items() if word in c}
    assert all(word in h.metadata["caption"].lower() for h in hits)

    # a newer run (here: its rows edited, two of them dropped) replaces the column; uncaptioned rows become null
    run2 = tmp_path / "run2"
    shutil.copytree(run, run2)
    dropped = sorted(captions)[:2]
    for part in sorted(run2.glob("part-*.parquet")):
        table = pq.read_table(part)
        rows = [{**r, "caption": f"newer caption {r['index_id']}"} for r in table.to_pylist()
                if r["index_id"] not in dropped]
        pq.write_table(type(table).from_pylist(rows, schema=table.schema), part)
    report = attach_captions(index, run2)
    assert (report["column"], report["matched"], report["uncaptioned"]) == ("caption", 13, 2)
    after = {r["id"]: r["caption"] for r in world.metadata(index)}
    assert after == {i: None if i in dropped else f"newer caption {i}" for i in captions}
    hits = Searcher(index, backbone=world.backbone).search(
        "a river", k=50, filters=Filters.parse(where=["caption like newer caption 1%"]))
    assert {h.id for h in hits} == {i for i in captions if str(i).startswith("1") and i not in dropped}


def test_a_run_over_the_files_themselves_matches_by_path_and_chip_window(world: World, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(world.index, index)
    remove_from_index(index, [0])  # a removed row gets nothing and counts as no match
    run = tmp_path / "run"
    world.caption(sources_for([world.root / "imgs", world.root / "scene.tif"], chip_size=CHIP), run)
    by_key = {(r["path"], r.get("chip_id")): r["caption"] for r in read_captions(run)}
    report = attach_captions(index, run)
    assert (report["matched"], report["unmatched"], report["uncaptioned"]) == (14, 1, 0)
    rows = world.metadata(index)
    assert all(r["caption"] == by_key[(r["path"], r.get("chip_id"))] for r in rows)


def test_missing_images_and_lost_chip_options_are_recorded_failures(world: World, tmp_path: Path) -> None:
    imgs = _images(tmp_path / "imgs", 3)
    scene = shutil.copy(world.root / "scene.tif", tmp_path / "scene.tif")
    tiny = World(tmp_path, world.captioner, world.backbone, [FolderSource([imgs]), SceneSource([scene], size=CHIP)])
    (imgs / "img_01.png").unlink()
    shutil.rmtree(tiny.embeddings)  # the chip options are gone with it
    summary = tiny.caption(index_sources(tiny.index), tmp_path / "run")
    assert (summary.captioned, summary.failed) == (2, 10)
    reasons = dict(summary.failures)
    assert "no such file" in reasons[str((imgs / "img_01.png").resolve())]
    assert "chip options" in reasons[f"{Path(scene).stem}_r0_c0"] and "is gone" in reasons[f"{Path(scene).stem}_r0_c0"]
    report = attach_captions(tiny.index, tmp_path / "run")
    assert (report["matched"], report["uncaptioned"]) == (2, 10)


def test_reference_captions_stay_and_the_generated_ones_go_beside_them(world: World, tmp_path: Path) -> None:
    from geovl.data.synthetic import SceneConfig, write_caption_dataset

    write_caption_dataset(tmp_path / "cap", n=4, seed=0, config=SceneConfig(size=48), progress=False)
    tiny = World(tmp_path, world.captioner, world.backbone, [DatasetSource(tmp_path / "cap" / "dataset.json")])
    before = {r["id"]: r["caption"] for r in tiny.metadata()}
    run = tmp_path / "run"
    tiny.caption(index_sources(tiny.index), run, format="jsonl")
    rows = read_captions(run)
    assert all(r["reference_caption"] == before[r["index_id"]] for r in rows)
    report = attach_captions(tiny.index, run)
    assert (report["column"], report["matched"]) == ("generated_caption", 4)
    after = tiny.metadata()
    assert {r["id"]: r["caption"] for r in after} == before
    assert {r["id"]: r["generated_caption"] for r in after} == {r["index_id"]: r["caption"] for r in rows}
    assert attach_captions(tiny.index, run)["column"] == "generated_caption"  # again: the same column
    # captioning the index again leaves the generated column out of the inputs' metadata
    (source,) = index_sources(tiny.index)
    assert all("generated_caption" not in r.meta for r in source.records())


def test_bad_inputs_and_failed_writes_leave_the_index_as_it_was(world: World, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / "index"
    shutil.copytree(world.index, index)
    run = tmp_path / "run"
    world.caption(index_sources(index), run, limit=3)
    before = folder_bytes(index)
    with pytest.raises(ValueError, match="not a geovl caption run"):
        attach_captions(index, world.embeddings)
    with pytest.raises(ValueError, match="is an embeddings folder, not an index"):
        attach_captions(world.embeddings, run)
    with pytest.raises(ValueError, match="not a geovl index folder"):
        attach_captions(run, run)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed while writing")

    monkeypatch.setattr("geovl.index.captions.finish_index_folder", fail)
    with pytest.raises(RuntimeError, match="killed"):
        attach_captions(index, run)
    assert folder_bytes(index) == before
    assert not leftovers(index)
    monkeypatch.undo()
    assert attach_captions(index, run)["matched"] == 3
    assert json.loads((index / "manifest.json").read_text())["captions"]["caption"]["matched"] == 3


def test_the_cli_captions_an_index_attaches_and_searches_the_captions(world: World, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from geovl.cli import main

    index = tmp_path / "index"
    shutil.copytree(world.index, index)
    run = tmp_path / "run"
    assert main(["caption", str(index), "--out", str(run), "--model", str(world.captioner_folder), "--device", "cpu",
                 "--precision", "fp32", "--workers", "0", "--limit", "4", "-q", "--attach-to", str(index)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 4 and report["attached"]["matched"] == 4 and report["attached"]["column"] == "caption"
    first = world.metadata(index)[0]
    text = first["caption"].split()[0].strip(".")
    assert main(["index", "search", str(index), "a river", "-k", "20", "--json", "--device", "cpu",
                 "--where", f"caption contains {text}"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert first["id"] in {h["id"] for h in hits}
    assert all(text.lower() in h["metadata"]["caption"].lower() for h in hits)


def test_like_and_contains_conditions() -> None:
    import pyarrow as pa

    table = MetadataTable(pa.table({"id": pa.array([1, 2, 3, 4], pa.int64()),
                                    "caption": ["A harbour with boats", "50% cloud_cover", None, "boats, no harbour"],
                                    "gsd": [1.0, 2.0, 3.0, 4.0]}))

    def rows(*where: str) -> list[int]:
        mask = table.mask(Filters.parse(where=list(where)))
        return [int(i) for i in table.ids[mask]] if mask is not None else []

    assert rows("caption contains HARBOUR") == [1, 4]
    assert rows("caption like %harbour%boats%") == [1]
    assert rows("caption contains 50%") == [2] and rows("caption contains d_c") == [2]  # % and _ are literal
    assert rows("caption like _0\\% %") == [2]
    assert Like.contains("a_b%") == Like("%a\\_b\\%%")
    with pytest.raises(ValueError, match="holds number values"):
        rows("gsd contains 1")
    with pytest.raises(ValueError, match="missing text after 'contains'"):
        Filters.parse(where=["caption contains ''"])
    with pytest.raises(ValueError, match="non-empty"):
        Like("")
