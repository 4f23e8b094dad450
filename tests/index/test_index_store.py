"""Index life cycle: choosing a type, build / add / remove / load, atomic replacement, shards and on-disk merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
pq = pytest.importorskip("pyarrow.parquet")

from geovl.index import store  # noqa: E402
from geovl.index.choose import (  # noqa: E402
    FLAT_MAX_BYTES,
    RERANK_K_FACTOR,
    choose_index,
    default_nprobe,
    describe_factory,
    estimate_memory,
    ivf_nlist,
)
from geovl.index.faiss_ops import sample_vectors  # noqa: E402
from geovl.index.manifest import IndexManifest, open_embedding_sets  # noqa: E402
from geovl.index.sharded import build_shard, merge_shards, train_ivf_quantizer  # noqa: E402
from geovl.index.store import add_to_index, build_index, load_index, remove_from_index  # noqa: E402
from tests.index_fixtures import (  # noqa: E402
    OTHER_MODEL,
    clustered_unit_vectors,
    exact_topk,
    folder_bytes,
    gappy_ids,
    leftovers,
    recall,
    write_embeddings,
)

REPO = Path(__file__).resolve().parents[2]
N, NQ, K = 3000, 200, 10
VECS = clustered_unit_vectors(N + NQ, spread=1.2, seed=0)
BASE, QUERIES = VECS[:N], VECS[N:]
IDS = gappy_ids(N, start=100, seed=0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    faiss.omp_set_num_threads(1)  # the test machine is shared; one thread also makes faiss deterministic


@pytest.fixture
def emb(tmp_path: Path) -> Path:
    """The base set in two partitions, the second written in shuffled id order."""
    return write_embeddings(tmp_path / "emb", BASE, IDS, partition_size=1600, shuffle_partition=1)


def _new_set(tmp_path: Path, name: str, n: int, *, seed: int, start: int, **kw: object) -> tuple[Path, np.ndarray,
                                                                                                   np.ndarray]:
    vecs = clustered_unit_vectors(n, spread=1.2, seed=seed)
    ids = gappy_ids(n, start=start, seed=seed)
    return write_embeddings(tmp_path / name, vecs, ids, **kw), vecs, ids  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ choose_index


def test_choose_index_rules_at_boundaries() -> None:
    flat_n = FLAT_MAX_BYTES // (4 * 512)
    assert choose_index(flat_n, 512).factory == "Flat"
    # above the exact-scan limit: IVF-SQ8 codes in RAM, exact re-ranking from vectors.npy on disk
    sq8 = choose_index(flat_n + 1, 512)
    assert sq8.factory == "IVF512,SQ8" and sq8.params.rerank and sq8.params.k_factor == RERANK_K_FACTOR
    assert "re-ranked" in sq8.reason
    one_m = choose_index(1_000_000, 256)
    assert one_m.factory == "IVF2048,SQ8" and one_m.params.rerank and one_m.params.nprobe == 8
    assert one_m.memory_bytes < 300 * 2**20  # 256 MB of codes + ids + centroids: well inside a 600 MB budget
    big = choose_index(50_000_000, 512)
    assert big.factory == "IVF131072_HNSW32,SQ8" and big.params.ef_search == 128
    # SQ8 does not fit the budget -> OPQ+PQ with the largest m that fits, still re-ranked
    n = 500_000
    assert choose_index(n, 512, estimate_memory("IVF1024,SQ8", n, 512)).factory == "IVF1024,SQ8"
    pq_choice = choose_index(n, 512, 60 * 2**20)
    assert pq_choice.factory == "OPQ64,IVF1024,PQ64" and pq_choice.params.rerank and "re-ranked" in pq_choice.reason
    assert choose_index(n, 512, 1).factory == "OPQ8,IVF1024,PQ8"  # nothing fits: smallest, said so
    assert "over budget" in choose_index(n, 512, 1).reason
    # list counts: 2*sqrt(n) below 10M, 2^16..2^18 above, never more than n/39; nprobe = clip(nlist // 256, 8, 128)
    assert ivf_nlist(1_000_000) == 2**11 and ivf_nlist(9_999_999) == 2**13 and ivf_nlist(50_000_000) == 2**17
    assert ivf_nlist(1000) == 16 and ivf_nlist(5000) == 128
    assert [default_nprobe(n) for n in (16, 64, 1024, 4096, 2**16)] == [8, 8, 8, 16, 128]
    for c in (choose_index(10, 32), sq8, big, pq_choice):
        assert c.reason and c.memory_bytes > 0


def test_choose_index_for_sharded_builds_keeps_ivf_without_rerank() -> None:
    """Sharded builds merge inverted lists and keep no vectors.npy: IVF-Flat, then SQ8, then OPQ+PQ, no re-rank."""
    small_ivf = choose_index(5000, 32, ivf_only=True)
    assert small_ivf.factory == "IVF128,Flat" and small_ivf.params.nprobe == 8 and small_ivf.params.train_size == 5000
    assert not small_ivf.params.rerank
    n = 500_000
    assert choose_index(n, 512, 400 * 2**20, ivf_only=True).factory == "IVF1024,SQ8"
    tight = choose_index(n, 512, 60 * 2**20, ivf_only=True)
    assert tight.factory == "OPQ64,IVF1024,PQ64" and not tight.params.rerank


def test_describe_factory_validates_and_strips_idmap() -> None:
    c = describe_factory("IDMap2,HNSW16", 1000, 32)
    assert (c.factory, c.kind, c.params.hnsw_m, c.params.train_size) == ("HNSW16", "hnsw", 16, 0)
    c = describe_factory("IVF64,SQ8", 5000, 32)
    assert (c.kind, c.params.nlist, c.params.nprobe, c.params.train_size) == ("ivf", 64, 8, 5000)
    c = describe_factory("OPQ8,IVF16,PQ8x4fsr,Refine(SQ8)", 5000, 32)  # IVF under a refine stage: ids via IDMap2
    assert (c.kind, c.params.nlist, c.params.nprobe, c.params.k_factor) == ("other", 16, 8, 4)
    with pytest.raises(ValueError, match=r"invalid faiss index_factory string 'IVF64,Bogus'"):
        describe_factory("IVF64,Bogus", 1000, 32)


# ------------------------------------------------------------------------------------------------ build + search


def test_build_keeps_global_ids_and_merges_metadata(tmp_path: Path, emb: Path) -> None:
    extra, xvecs, xids = _new_set(tmp_path, "emb2", 300, seed=5, start=20_000, extra_columns=False)
    m = build_index([emb, extra], tmp_path / "idx", progress=False)
    assert m.index_type == "Flat" and m.kind == "flat" and m.id_map and m.count == N + 300
    assert m.model == {"name": "geovl-test-tiny", "architecture": "tiny-vit", "checkpoint_sha256": "ab" * 32,
                       "dim": 32, "precision": "fp32"}
    assert (m.id_min, m.id_max) == (int(IDS[0]), int(xids[-1]))
    assert [s.count for s in m.sources] == [N, 300]
    loaded = load_index(tmp_path / "idx")
    scores, ids = loaded.search(np.concatenate([BASE[:5], xvecs[:5]]), K)
    assert ids[:, 0].tolist() == IDS[:5].tolist() + xids[:5].tolist()  # each vector finds itself, by global id
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    table = pq.read_table(tmp_path / "idx" / "metadata.parquet")
    assert table.column("id").to_pylist() == sorted(IDS.tolist() + xids.tolist())
    assert str(table.schema.field("acquired").type) == "timestamp[us, tz=UTC]"
    assert table.column("caption").null_count == 300  # columns missing from one set are null there
    assert b"geo" in table.schema.metadata and "bbox" not in json.loads(table.schema.metadata[b"geo"])["columns"][
        "geometry"]
    on_disk = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert on_disk["format"] == "geovl-index" and set(on_disk["params"]) >= {"nprobe", "M", "efSearch", "seed"}
    assert IndexManifest.load(tmp_path / "idx") == m


@pytest.mark.parametrize("factory", ["HNSW32", "IVF64,Flat", "auto"])
def test_recall_against_exact_search(tmp_path: Path, emb: Path, factory: str) -> None:
    m = build_index(emb, tmp_path / "idx", factory=factory, progress=False)
    loaded = load_index(tmp_path / "idx")
    exact = exact_topk(BASE, IDS, QUERIES, K)
    r = recall(exact, loaded.search(QUERIES, K)[1])
    assert r >= 0.9, (factory, r)
    if m.kind == "ivf":  # the default nprobe matters: a single list loses recall on this data
        assert recall(exact, loaded.search(QUERIES, K, nprobe=1)[1]) < r
        # the build widened the default nprobe until recall on a sample of the collection reached the target
        assert m.params.nprobe == m.expected["nprobe"] >= 8 and m.expected["reached"]
        assert m.expected["recall_at_k"] >= 0.97 and m.expected["sweep"][-1]["nprobe"] == m.params.nprobe


def test_training_sample_is_seeded_and_spread_over_partitions(emb: Path) -> None:
    sets = open_embedding_sets(emb)
    a, b = sample_vectors(sets, 200, 3), sample_vectors(sets, 200, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, sample_vectors(sets, 200, 4))
    rows = {v.tobytes() for v in a}
    assert any(v.tobytes() in rows for v in np.load(emb / "part-00001.npy"))  # not just the first rows
    assert not np.array_equal(a, BASE[:200])


def test_build_refuses_mixed_models_duplicates_and_bad_factory(tmp_path: Path, emb: Path) -> None:
    other, _, _ = _new_set(tmp_path, "other", 100, seed=2, start=50_000, model=OTHER_MODEL)
    with pytest.raises(ValueError, match=r"different models.*emb.*other-model"):
        build_index([emb, other], tmp_path / "idx", progress=False)
    dup, _, _ = _new_set(tmp_path, "dup", 50, seed=3, start=int(IDS[10]))
    with pytest.raises(ValueError, match=r"duplicate ids"):
        build_index([emb, dup], tmp_path / "idx", progress=False)
    with pytest.raises(ValueError, match=r"index_factory"):
        build_index(emb, tmp_path / "idx", factory="HNSWxx", progress=False)
    assert not (tmp_path / "idx").exists() and not leftovers(tmp_path / "idx")


def test_missing_files_say_what_to_run(tmp_path: Path, emb: Path) -> None:
    with pytest.raises(FileNotFoundError, match="geovl index build"):
        load_index(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="geovl embed"):
        build_index(tmp_path / "nowhere", tmp_path / "idx")
    build_index(emb, tmp_path / "idx", progress=False)
    (tmp_path / "idx" / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="geovl index build"):
        load_index(tmp_path / "idx")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a geovl index"):
        build_index(emb, tmp_path / "junk", progress=False)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ add / remove


@pytest.mark.parametrize("factory", ["IVF64,Flat", "HNSW32", "Flat"])
def test_add_then_search_finds_new_vectors(tmp_path: Path, emb: Path, factory: str) -> None:
    build_index(emb, tmp_path / "idx", factory=factory, progress=False)
    new, nvecs, nids = _new_set(tmp_path, "new", 400, seed=7, start=30_000)
    m = add_to_index(tmp_path / "idx", new, progress=False)
    assert m.count == N + 400 and m.added_since_training == 400 and len(m.sources) == 2
    loaded = load_index(tmp_path / "idx")
    assert loaded.index.ntotal == N + 400
    assert loaded.search(nvecs[:20], 1)[1][:, 0].tolist() == nids[:20].tolist()
    assert pq.read_table(tmp_path / "idx" / "metadata.parquet").num_rows == N + 400
    with pytest.raises(ValueError, match=r"ids are already in the index.*30000"):
        add_to_index(tmp_path / "idx", new, progress=False)
    other, _, _ = _new_set(tmp_path, "other", 50, seed=8, start=90_000, model=OTHER_MODEL)
    with pytest.raises(ValueError, match=r"index was built with model geovl-test-tiny \(sha abababababab.*got other"):
        add_to_index(tmp_path / "idx", other, progress=False)


def test_add_notes_rebuild_when_volume_outgrows_training(tmp_path: Path, emb: Path) -> None:
    build_index(emb, tmp_path / "idx", factory="IVF32,Flat", progress=False)
    new, _, _ = _new_set(tmp_path, "new", N + 10, seed=9, start=40_000)
    m = add_to_index(tmp_path / "idx", new, progress=False)
    assert any(n.startswith("consider rebuild") for n in m.notes)


def test_remove_ivf_uses_remove_ids(tmp_path: Path, emb: Path) -> None:
    build_index(emb, tmp_path / "idx", factory="IVF64,Flat", progress=False)
    gone = IDS[:10]
    m = remove_from_index(tmp_path / "idx", gone)
    assert (m.removal, m.count, m.deleted) == ("remove_ids", N - 10, 0)
    assert not (tmp_path / "idx" / "deleted.npy").exists()
    loaded = load_index(tmp_path / "idx")
    assert loaded.index.ntotal == N - 10
    assert not np.isin(loaded.search(BASE[:10], K)[1], gone).any()
    assert not np.isin(pq.read_table(tmp_path / "idx" / "metadata.parquet").column("id").to_numpy(), gone).any()
    with pytest.raises(ValueError, match=r"not in the index"):
        remove_from_index(tmp_path / "idx", gone[:2])
    assert remove_from_index(tmp_path / "idx", gone[:2], missing_ok=True).count == N - 10


def test_remove_hnsw_records_tombstones(tmp_path: Path, emb: Path) -> None:
    build_index(emb, tmp_path / "idx", factory="HNSW32", progress=False)
    gone = IDS[:10]
    m = remove_from_index(tmp_path / "idx", gone)
    assert (m.removal, m.count, m.deleted, m.files["deleted"]) == ("tombstones", N - 10, 10, "deleted.npy")
    assert np.array_equal(np.load(tmp_path / "idx" / "deleted.npy"), np.sort(gone))
    loaded = load_index(tmp_path / "idx")
    assert loaded.index.ntotal == N and loaded.deleted.size == 10  # still stored, skipped by search
    found = loaded.search(BASE[:10], K)[1]
    assert not np.isin(found, gone).any() and (found >= 0).all()
    # metadata keeps one row per stored vector; the tombstones flag the removed ones
    assert pq.read_table(tmp_path / "idx" / "metadata.parquet").num_rows == N
    new = write_embeddings(tmp_path / "again", BASE[:3], gone[:3])
    with pytest.raises(ValueError, match=r"tombstoned"):
        add_to_index(tmp_path / "idx", new, progress=False)


# ------------------------------------------------------------------------------------------------ atomicity


@pytest.mark.parametrize("where", ["write_index", "metadata"])
def test_failed_build_leaves_previous_index_untouched(tmp_path: Path, emb: Path, monkeypatch: pytest.MonkeyPatch,
                                                      where: str) -> None:
    out = tmp_path / "idx"
    build_index(emb, out, factory="IVF32,Flat", progress=False)
    before = folder_bytes(out)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash")

    if where == "write_index":
        monkeypatch.setattr(faiss, "write_index", boom)
    else:
        monkeypatch.setattr(store, "merge_metadata", boom)
    new, _, _ = _new_set(tmp_path, "new", 200, seed=11, start=70_000)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_index(emb, out, factory="HNSW32", progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        add_to_index(out, new, progress=False)
    assert folder_bytes(out) == before
    assert not leftovers(out)
    monkeypatch.undo()
    assert load_index(out).search(BASE[:3], 1)[1][:, 0].tolist() == IDS[:3].tolist()


def test_interrupted_swap_is_recovered(tmp_path: Path, emb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "idx"
    build_index(emb, out, factory="Flat", progress=False)
    before = folder_bytes(out)
    # in-process failure between "old aside" and "new in": the old folder is put back
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if str(src).endswith(".tmpdir"):
            raise OSError("simulated failure")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        build_index(emb, out, factory="HNSW32", progress=False)
    monkeypatch.undo()
    assert folder_bytes(out) == before and not leftovers(out)
    # a kill in that window leaves the index set aside (plus a stale temp): readers fall back to it and the
    # next writer restores it before doing anything
    aside = tmp_path / ".idx.old"
    os.rename(out, aside)
    (tmp_path / ".idx.0badbeef.tmpdir").mkdir()
    (tmp_path / ".idx.other.0badbeef.tmpdir").mkdir()  # another folder's writer (idx.other): not ours to clear
    assert load_index(out).path == aside
    remove_from_index(out, IDS[:1])
    assert load_index(out).manifest.count == N - 1
    assert [p.name for p in leftovers(out)] == [".idx.other.0badbeef.tmpdir"]


def test_kill_mid_build_keeps_previous_index(tmp_path: Path, emb: Path) -> None:
    out = tmp_path / "idx"
    build_index(emb, out, factory="IVF32,Flat", progress=False)
    before = folder_bytes(out)
    big, _, _ = _new_set(tmp_path, "big", 40_000, seed=12, start=0, partition_size=10_000)
    code = (f"from geovl.index.store import build_index; "
            f"build_index({str(big)!r}, {str(out)!r}, factory='HNSW32', ef_construction=80, progress=False)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(out):
            assert proc.poll() is None, "the build finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.2)  # well into the build
        assert proc.poll() is None, "the build finished before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert leftovers(out)  # the killed writer's temporary folder
    assert folder_bytes(out) == before
    assert load_index(out).search(BASE[:3], 1)[1][:, 0].tolist() == IDS[:3].tolist()
    m = build_index(big, out, factory="IVF32,Flat", progress=False)  # the rerun completes and cleans up
    assert m.count == 40_000 and not leftovers(out)


# ------------------------------------------------------------------------------------------------ load


@pytest.mark.parametrize("factory", ["IVF32,Flat", "HNSW32", "Flat"])
def test_mmap_load_matches_ram_load(tmp_path: Path, emb: Path, factory: str) -> None:
    build_index(emb, tmp_path / "idx", factory=factory, progress=False)
    remove_from_index(tmp_path / "idx", IDS[:5])
    ram, mm = load_index(tmp_path / "idx"), load_index(tmp_path / "idx", mmap=True)
    assert mm.mmap and not ram.mmap
    s1, i1 = ram.search(QUERIES[:20], K)
    s2, i2 = mm.search(QUERIES[:20], K)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2)
    if factory.startswith("IVF"):
        ivf = faiss.extract_index_ivf(mm.index)
        assert isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)


# ------------------------------------------------------------------------------------------------ shards


def test_shards_merge_like_a_single_build(tmp_path: Path) -> None:
    parts = [write_embeddings(tmp_path / f"s{j}", BASE[j::3], IDS[j::3], partition_size=600) for j in range(3)]
    kw = {"factory": "IVF32,Flat", "train_size": 2000, "seed": 1}
    trained = train_ivf_quantizer(parts, tmp_path / "trained", **kw)  # type: ignore[arg-type]
    assert trained.count == 0 and trained.trained_sha256
    shards = [tmp_path / f"shard{j}" for j in range(3)]
    for j, p in enumerate(parts):
        assert build_shard(tmp_path / "trained", p, shards[j], progress=False).count == len(IDS[j::3])
    # uncalibrated, like the shards: the same default nprobe
    single = build_index(parts, tmp_path / "single", progress=False, calibrate=False, **kw)  # type: ignore[arg-type]
    assert single.trained_sha256 == trained.trained_sha256  # same sample, same seed: the same quantizer
    ram = merge_shards(shards, tmp_path / "merged")
    disk = merge_shards(shards, tmp_path / "merged_disk", on_disk=True)
    assert ram.count == disk.count == N and disk.on_disk and (tmp_path / "merged_disk" / "index.ivfdata").is_file()
    assert not ram.notes
    ref_s, ref_i = load_index(tmp_path / "single").search(QUERIES, K)
    for name in ("merged", "merged_disk"):
        s, i = load_index(tmp_path / name).search(QUERIES, K)
        assert np.allclose(s, ref_s, atol=1e-6)
        assert all(set(a) == set(b) for a, b in zip(i.tolist(), ref_i.tolist(), strict=True))
    assert pq.read_table(tmp_path / "merged" / "metadata.parquet").column("id").to_pylist() == IDS.tolist()
    # a shard trained separately is refused
    train_ivf_quantizer(parts[0], tmp_path / "trained2", factory="IVF32,Flat", seed=2)
    build_shard(tmp_path / "trained2", parts[0], tmp_path / "stray", progress=False)
    with pytest.raises(ValueError, match="trained separately"):
        merge_shards([shards[1], tmp_path / "stray"], tmp_path / "bad")
    with pytest.raises(ValueError, match="IVF"):
        train_ivf_quantizer(parts, tmp_path / "t3", factory="HNSW32")


def test_on_disk_index_add_and_remove(tmp_path: Path) -> None:
    halves = [write_embeddings(tmp_path / f"h{j}", BASE[j::2], IDS[j::2]) for j in range(2)]
    train_ivf_quantizer(halves, tmp_path / "trained", factory="IVF32,Flat")
    for j, h in enumerate(halves):
        build_shard(tmp_path / "trained", h, tmp_path / f"shard{j}", progress=False)
    out = tmp_path / "disk"
    merge_shards([tmp_path / "shard0", tmp_path / "shard1"], out, on_disk=True)
    for j in range(2):  # the merged index no longer needs the shards
        os.rename(tmp_path / f"shard{j}", tmp_path / f"moved{j}")
    new, nvecs, nids = _new_set(tmp_path, "new", 300, seed=13, start=60_000)
    before = (out / "index.ivfdata").read_bytes()
    m = add_to_index(out, new, progress=False)
    assert m.on_disk and m.count == N + 300
    loaded = load_index(out)
    assert loaded.mmap and loaded.search(nvecs[:5], 1)[1][:, 0].tolist() == nids[:5].tolist()
    assert loaded.search(BASE[:5], 1)[1][:, 0].tolist() == IDS[:5].tolist()
    m = remove_from_index(out, nids[:5])
    assert (m.removal, m.deleted, m.count) == ("tombstones", 5, N + 295)
    assert not np.isin(load_index(out).search(nvecs[:5], K)[1], nids[:5]).any()
    assert before  # the shard files were only read


# ------------------------------------------------------------------------------------------------ GPU


def test_use_gpu_true_without_a_gpu_is_refused(tmp_path: Path, emb: Path) -> None:
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"geovl\[gpu\]"):
        build_index(emb, tmp_path / "idx", use_gpu=True, progress=False)
    assert not (tmp_path / "idx").exists()


@pytest.mark.gpu
def test_gpu_build_writes_a_cpu_index(tmp_path: Path, emb: Path) -> None:
    if faiss.get_num_gpus() < 1:
        pytest.skip("faiss sees no GPU")
    m = build_index(emb, tmp_path / "idx", factory="IVF64,Flat", use_gpu=True, progress=False)
    assert m.gpu_used
    cpu = load_index(tmp_path / "idx", use_gpu=False)
    assert isinstance(faiss.downcast_index(cpu.index), faiss.IndexIVFFlat)
    exact = exact_topk(BASE, IDS, QUERIES, K)
    assert recall(exact, cpu.search(QUERIES, K)[1]) >= 0.9
    gpu = load_index(tmp_path / "idx", use_gpu=True)
    assert gpu.gpu and recall(exact, gpu.search(QUERIES, K)[1]) >= 0.9
