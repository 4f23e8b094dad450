"""Index benchmark at 1M vectors: build time, RAM, recall@10 vs exact, latency vs bare faiss, filters, end to end.

Vectors with realistic structure (not i.i.d. noise, on which no ANN index works):

1. Real and synthetic tiles (EuroSAT, UCM, RSICD from ../shared/data, plus synthetic scenes) are embedded with
   ``--model`` (default: the default model, ``geovl-rs-small``, 256-d), and captions of the same sets give the
   text queries.
2. Those embeddings are expanded to ``--n`` vectors by augmentation (noisy copies and neighbour interpolations,
   see :func:`write_expanded`) and written as a geovl embeddings folder with metadata (lon/lat footprint,
   acquisition date, sensor) so the real ``build_index`` and ``Searcher`` code paths are measured.
3. Queries: held-out real image embeddings (never indexed) and caption embeddings.

Each index type is built with ``geovl.index.build_index`` and compared side by side with exact search
(``IndexFlatIP``) in the same run. Figures print as Markdown; nothing is asserted.

    python benchmarks/index_1m.py                  # 1M vectors (about 20 min on 2 cores)
    python benchmarks/index_1m.py --n 200000       # a quicker look
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def base_embeddings(model: str, cache: Path, n_images: int, n_texts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of real + synthetic tiles and of captions (cached in ``cache``)."""
    img_file, txt_file = cache / "base_images.npy", cache / "base_texts.npy"
    if img_file.is_file() and txt_file.is_file():
        return np.load(img_file), np.load(txt_file)
    from geovl.data import open_dataset
    from geovl.data.sources import list_images
    from geovl.data.synthetic import SceneConfig, generate_scene
    from geovl.models import load_backbone
    from geovl.tasks.embedding import EmbeddingPipeline

    rng = np.random.default_rng(seed)
    bb = load_backbone(model)
    files = [str(f) for f in list_images([SHARED / "eurosat_rgb", SHARED / "ucm_captions" / "images",
                                          SHARED / "rsicd_train" / "images"])]
    n_synth = n_images // 5
    picked: list = [files[i] for i in rng.permutation(len(files))[: n_images - n_synth]]
    picked += [generate_scene(seed, i, SceneConfig(size=128)).image for i in range(n_synth)]
    result = EmbeddingPipeline(bb, batch_size=32, workers=1)(picked, progress=True, desc="base images")
    emb, seconds = result.embeddings, result.seconds
    captions = [c for name in ("ucm_captions", "rsicd_train") for s in open_dataset("karpathy", SHARED / name)
                for c in s["captions"][:1]]
    texts = [captions[i] for i in rng.permutation(len(captions))[:n_texts]]
    txt = bb.encode_texts(texts, progress=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(img_file, emb)
    np.save(txt_file, txt)
    from geovl.models.record import model_record

    (cache / "model.json").write_text(json.dumps(model_record(bb), default=str))
    print(f"embedded {len(picked)} tiles in {seconds:.0f} s and {len(texts)} captions with {model}")
    return emb, txt


def write_expanded(base: np.ndarray, n: int, out: Path, seed: int, model: dict | None = None,
                   part: int = 100_000) -> None:
    """Expand ``base`` to ``n`` vectors by augmentation, into a geovl embeddings folder with metadata.

    Half of the vectors are noisy copies of a base vector (cosine 0.85-0.98 to it, like overlapping chips or
    re-acquisitions of one place), half are interpolations between a base vector and one of its 10 nearest base
    neighbours plus a little noise (like tiles between two similar scenes). This keeps the local neighbourhood
    structure of the real embeddings, which an i.i.d. or global Gaussian sample would destroy.
    """
    from geovl.index.faisslib import faiss_module

    faiss = faiss_module()  # with faiss' OpenBLAS set up for this CPU
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    knn_index = faiss.IndexFlatIP(dim)
    knn_index.add(base)
    _, neighbours = knn_index.search(base, 11)
    neighbours = neighbours[:, 1:]
    out.mkdir(parents=True, exist_ok=True)
    partitions = []
    start_date = datetime(2015, 1, 1, tzinfo=timezone.utc)
    sensors = np.array(["sentinel-2"] * 60 + ["landsat-8"] * 30 + ["naip"] * 9 + ["worldview-3"])
    for p, lo in enumerate(range(0, n, part)):
        m = min(part, n - lo)
        src = rng.integers(0, len(base), m)
        noise_scale = rng.uniform(0.2, 0.6, (m, 1)).astype(np.float32)
        mix = rng.random(m) < 0.5
        alpha = rng.uniform(0.3, 0.7, (m, 1)).astype(np.float32)
        partner = base[neighbours[src, rng.integers(0, 10, m)]]
        centre = np.where(mix[:, None], alpha * base[src] + (1 - alpha) * partner, base[src])
        scale = np.where(mix[:, None], 0.15, noise_scale).astype(np.float32)
        vec = _unit(_unit(centre) + scale * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim))
        np.save(out / f"part-{p:05d}.npy", vec)
        lon = rng.uniform(-180, 179.9, m)
        lat = rng.uniform(-60, 70, m)
        days = rng.integers(0, 3650, m)
        table = pa.table({
            "id": pa.array(np.arange(lo, lo + m), pa.int64()),
            "path": pa.array([f"tile_{i}.png" for i in range(lo, lo + m)]),
            "lon_min": lon, "lat_min": lat, "lon_max": lon + 0.05, "lat_max": lat + 0.05,
            "acquired": pa.array([start_date + timedelta(days=int(d)) for d in days], pa.timestamp("us", tz="UTC")),
            "sensor": pa.array(sensors[rng.integers(0, len(sensors), m)]),
        })
        pq.write_table(table, out / f"part-{p:05d}.parquet")
        partitions.append({"name": f"part-{p:05d}", "count": m, "failed": 0, "first_id": lo, "last_id": lo + m - 1})
    manifest = {"format": "geovl-embeddings", "format_version": 1,
                "model": model or {"name": "benchmark-expansion", "architecture": "expansion",
                                   "checkpoint_sha256": None, "dim": dim},
                "dim": dim, "metric": "ip", "normalized": True, "count": n, "failed": 0,
                "partitions": partitions, "complete": True, "sources": [{"kind": "expansion", "seed": seed}],
                "partition_size": part, "geovl_version": "benchmark", "created": datetime.now(timezone.utc).isoformat()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def load_vectors(emb_dir: Path) -> np.ndarray:
    parts = sorted(emb_dir.glob("part-*.npy"))
    return np.concatenate([np.load(p) for p in parts])


def flat_search(index):  # type: ignore[no-untyped-def]
    return lambda q: index.search(q, 10)


def latencies(fn, queries: np.ndarray, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(queries[i : i + 1])
        times.append(time.perf_counter() - t)
    return 1000 * float(np.percentile(times, 50)), 1000 * float(np.percentile(times, 99))


def main() -> None:  # noqa: PLR0915 - one linear benchmark procedure, its steps printed in order
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--model", default="geovl-rs-small", help="backbone for the base embeddings (the default model)")
    ap.add_argument("--base-images", type=int, default=8000)
    ap.add_argument("--work", type=Path, default=Path("out/bench_index"))
    ap.add_argument("--factories", default="auto",
                    help="'auto' (what `geovl index build` picks) and/or faiss index_factory strings, separated by ';'")
    ap.add_argument("--timed", type=int, default=300, help="single queries timed per index")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nprobe", default="8,16,32", help="IVF nprobe values to sweep (plus the calibrated default)")
    ap.add_argument("--ef-search", default="32,64,128", help="HNSW efSearch values to sweep, comma-separated")
    ap.add_argument("--prepare-only", action="store_true", help="embed and expand the vectors, then stop")
    args = ap.parse_args()

    from geovl.index.faisslib import faiss_module

    faiss = faiss_module()  # with faiss' OpenBLAS set up for this CPU

    from geovl.eval.index_quality import exact_topk, recall_at_k
    from geovl.index.filters import Filters
    from geovl.index.search import Searcher
    from geovl.index.store import build_index

    faiss.omp_set_num_threads(2)
    tag = f"{args.model.replace(':', '_').replace('/', '_')}-{args.base_images}"
    base, txt = base_embeddings(args.model, args.work / "cache" / tag, args.base_images, 1000, args.seed)
    rng = np.random.default_rng(args.seed)
    held = rng.permutation(len(base))
    img_q, fit = base[held[:1000]], base[held[1000:]]
    emb_dir = args.work / f"expanded_{tag}_{args.n}"
    if not (emb_dir / "manifest.json").is_file():
        t = time.perf_counter()
        record = args.work / "cache" / tag / "model.json"
        write_expanded(fit, args.n, emb_dir, args.seed, json.loads(record.read_text()) if record.is_file() else None)
        print(f"wrote {args.n} expanded vectors in {time.perf_counter() - t:.0f} s")
    if args.prepare_only:
        return
    xb = load_vectors(emb_dir)
    t = time.perf_counter()
    truth_img = exact_topk(xb, img_q, 10)
    truth_txt = exact_topk(xb, txt, 10)
    print(f"exact ground truth for {len(img_q) + len(txt)} queries in {time.perf_counter() - t:.0f} s")
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    exact_p50, exact_p99 = latencies(flat_search(flat), img_q, 50)
    flat.reset()

    rows = []
    factories = _split_factories(args.factories)
    for factory in factories:
        out = args.work / "idx" / _folder_name(factory)
        rss0 = _rss_anon_mb()
        t = time.perf_counter()
        manifest = build_index(emb_dir, out, factory=factory, progress=False, seed=args.seed)
        build_s = time.perf_counter() - t
        faiss_mb = (out / "index.faiss").stat().st_size / 1e6
        disk_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
        searcher = Searcher(out)
        ram_mb = _rss_anon_mb() - rss0
        bare = searcher.loaded.index
        exp = manifest.expected
        default_knob = exp.get("nprobe") or exp.get("efSearch")
        how = "re-ranked from vectors.npy" if manifest.params.rerank else "no re-rank"
        print(f"built {manifest.index_type} ({how}) in {build_s:.0f} s; index.faiss {faiss_mb:.0f} MB, folder "
              f"{disk_mb:.0f} MB on disk, searcher RAM (anonymous) {ram_mb:.0f} MB; build-time calibration: "
              f"{exp.get('sweep')}, p50 {exp.get('p50_ms')} ms", flush=True)
        for knob, value in _sweep(manifest.kind, args.nprobe, args.ef_search, default_knob):
            kw = {knob: value} if knob else {}
            ids_img = np.array([[h.id for h in hits] for hits in searcher.search_batch(list(img_q), k=10, **kw)])
            ids_txt = np.array([[h.id for h in hits] for hits in searcher.search_batch(list(txt), k=10, **kw)])
            r_img, r_txt = recall_at_k(truth_img, ids_img, 10), recall_at_k(truth_txt, ids_txt, 10)
            params = searcher._faiss.params(None, value if knob == "nprobe" else searcher._faiss.nprobe,
                                            value if knob == "ef_search" else searcher._faiss.ef_search)
            # bare faiss (k = 10, and k = the candidates the Searcher re-ranks) and the Searcher, query by query
            fetch = int(10 * manifest.params.k_factor) if manifest.params.rerank and manifest.params.k_factor else 10
            took = _timed_calls(bare, searcher, params, kw, fetch, img_q, args.timed)
            bare_t, srch_t, wide_t = took["bare"], took["searcher"], took["wide"]
            p50, p99 = 1000 * float(np.percentile(srch_t, 50)), 1000 * float(np.percentile(srch_t, 99))
            bare50 = 1000 * float(np.percentile(bare_t, 50))
            wide50 = 1000 * float(np.percentile(wide_t, 50))
            t = time.perf_counter()
            searcher.search_batch(list(img_q), k=10, **kw)
            qps = len(img_q) / (time.perf_counter() - t)
            mark = " (default)" if value == default_knob else ""
            rows.append((manifest.index_type, f"{knob}={value}{mark}" if knob else "-", build_s, faiss_mb, ram_mb,
                         r_img, r_txt, p50, p99, bare50, wide50, fetch, qps))
            print(_row(rows[-1], exact_p50), flush=True)
        del searcher, bare
        if factory != factories[0]:
            shutil.rmtree(out, ignore_errors=True)

    # Filtered search on the first (recommended) index: filters matching ~1% of the collection
    first = args.work / "idx" / _folder_name(factories[0])
    searcher = Searcher(first)
    filt = Filters.parse(where=["sensor=worldview-3"])
    plan = searcher.plan(filt)
    hits = [searcher.search(q, k=10, filters=filt) for q in img_q[:100]]
    full = sum(len(h) == 10 for h in hits)
    allowed = searcher.metadata.mask(filt)
    truth_f = _filtered_truth(xb, allowed, img_q[:100], 10)
    r_f = recall_at_k(truth_f, np.array([[h.id for h in hs] for hs in hits]), 10)
    p50f, p99f = latencies(lambda q: searcher.search(q[0], k=10, filters=filt), img_q, 200)
    bbox = Filters.parse(bbox="-10,35,30,60", start="2020-01-01", end="2022-12-31")
    p50b, p99b = latencies(lambda q: searcher.search(q[0], k=10, filters=bbox), img_q, 200)
    nb = len(searcher.search(img_q[0], k=10, filters=bbox))
    share_b = searcher.plan(bbox).allowed / len(searcher)

    # End to end: text in, hits with metadata out, through the default model
    e2e = ""
    try:
        searcher.backbone  # noqa: B018 - load the query encoder once, outside the timing
        texts = _caption_texts(args.seed, 200)
        searcher.search(texts[0], k=10)
        times = []
        for text in texts:
            t = time.perf_counter()
            searcher.search(text, k=10)
            times.append(time.perf_counter() - t)
        e2e = (f"end to end (text in, hits with metadata out, {searcher.model.get('name')}, {len(texts)} distinct "
               f"captions): p50 {1000 * np.percentile(times, 50):.2f} ms, p99 {1000 * np.percentile(times, 99):.2f} ms")
    except Exception as exc:  # the benchmark reports what it could not measure
        e2e = f"end to end: not measured ({exc})"

    print(f"\n# index benchmark, {date.today()}, {platform.machine()}, {faiss.omp_get_max_threads()} threads, faiss "
          f"{faiss.__version__}, {args.n} x {xb.shape[1]} vectors expanded from {args.model} embeddings of "
          f"{len(fit)} real and synthetic tiles; {len(img_q)} held-out image queries and {len(txt)} caption queries; "
          "k = 10; latencies are single queries through Searcher (hits with metadata)")
    print("| index | search param | build s | index.faiss MB | RAM MB | recall@10 image q | recall@10 text q | "
          "p50 ms | p99 ms | bare faiss p50 ms | Searcher / bare | bare faiss p50 ms at the re-ranked k | "
          "Searcher / that | batch QPS | speed-up vs exact p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(_row(r, exact_p50))
    print(f"| exact (IndexFlatIP) | - | - | {xb.nbytes / 1e6:.0f} | {xb.nbytes / 1e6:.0f} | 1.000 | 1.000 | "
          f"{exact_p50:.2f} | {exact_p99:.2f} | - | - | - | - | - | 1x |")
    print(f"\nfiltered search on {first.name} (sensor = worldview-3, {plan.allowed / len(searcher):.1%} of rows, "
          f"plan {plan.path}): {full}/100 queries returned a full top-10, recall@10 vs exact filtered search "
          f"{r_f:.3f}; p50 {p50f:.2f} ms, p99 {p99f:.2f} ms")
    print(f"bbox (40 x 25 deg) + 3-year date filter ({share_b:.1%} of rows, plan {searcher.plan(bbox).path}): {nb} "
          f"hits for the first query; p50 {p50b:.2f} ms, p99 {p99b:.2f} ms")
    print(e2e)


def _timed_calls(bare, searcher, params, kw: dict, fetch: int, queries: np.ndarray,  # type: ignore[no-untyped-def]
                 n: int) -> dict[str, list[float]]:
    """Seconds per call of the bare faiss search (k = 10 and k = ``fetch``) and of ``Searcher.search``, per query.

    The three calls for one query run in a rotating order: whichever runs second or third finds the query's
    inverted lists in the CPU caches, so a fixed order would favour the later ones.
    """
    def faiss_call(q: np.ndarray, k: int) -> None:
        bare.search(q, k, params=params) if params is not None else bare.search(q, k)

    calls = {"bare": lambda q: faiss_call(q, 10), "searcher": lambda q: searcher.search(q[0], k=10, **kw),
             "wide": lambda q: faiss_call(q, fetch)}
    took: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(n):
        q = queries[i % len(queries)][None, :]
        for name in names[i % 3:] + names[:i % 3]:
            t0 = time.perf_counter()
            calls[name](q)
            took[name].append(time.perf_counter() - t0)
    return took


def _row(r: tuple, exact_p50: float) -> str:  # type: ignore[type-arg]
    f, knob, b, size, ram, ri, rt, p50, p99, bare50, wide50, fetch, qps = r
    return (f"| {f} | {knob} | {b:.0f} | {size:.0f} | {ram:.0f} | {ri:.3f} | {rt:.3f} | {p50:.2f} | {p99:.2f} | "
            f"{bare50:.2f} | {p50 / bare50:.2f}x | {wide50:.2f} (k={fetch}) | {p50 / wide50:.2f}x | {qps:.0f} | "
            f"{exact_p50 / p50:.0f}x |")


def _folder_name(factory: str) -> str:
    return factory.replace(",", "_").replace("(", "").replace(")", "")


def _rss_anon_mb() -> float:
    """Anonymous resident memory of this process (heap, not file pages that memory-mapping brings in), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _filtered_truth(xb: np.ndarray, allowed: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    rows = np.flatnonzero(allowed)
    scores = queries @ xb[rows].T
    top = np.argsort(-scores, axis=1)[:, :k]
    return rows[top]  # ids are 0..n-1 in the expanded set


def _caption_texts(seed: int, n: int) -> list[str]:
    from geovl.data import open_dataset

    captions = [c for name in ("ucm_captions", "rsicd_train") for s in open_dataset("karpathy", SHARED / name)
                for c in s["captions"][1:2]]
    rng = np.random.default_rng(seed + 1)
    return list(dict.fromkeys(captions[i] for i in rng.permutation(len(captions))))[:n]


def _split_factories(text: str) -> list[str]:
    """Factory strings are separated by ';' (they contain commas themselves)."""
    return [f.strip() for f in text.split(";") if f.strip()]


def _sweep(kind: str, nprobe: str, ef_search: str, default: int | None) -> list[tuple[str | None, int]]:
    if kind == "hnsw":
        values = sorted({int(v) for v in ef_search.split(",")} | ({default} if default else set()))
        return [("ef_search", v) for v in values]
    if kind == "ivf":
        values = sorted({int(v) for v in nprobe.split(",")} | ({default} if default else set()))
        return [("nprobe", v) for v in values]
    return [(None, 0)]


if __name__ == "__main__":
    main()
