"""End-to-end text query latency: encode (backbone) + search (faiss) + metadata, on a built index.

    geovl embed ../shared/data/eurosat_rgb --format imagefolder --out out/eurosat
    geovl index build out/eurosat --out out/eurosat_index
    python benchmarks/search_latency.py out/eurosat_index
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import numpy as np

from geovl.index.search import Searcher

QUERIES = ["a river through farmland", "dense residential buildings", "a highway interchange", "a forest",
           "an industrial area with warehouses", "pasture land", "a lake", "permanent crop fields"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    s = Searcher(args.index)
    s.search(QUERIES[0], k=args.k)  # loads the model, warms up
    enc, srch, total = [], [], []
    for _ in range(args.repeats):
        for q in QUERIES:
            t0 = time.perf_counter()
            vec = s.encode([q])
            t1 = time.perf_counter()
            hits = s.search(vec[0], k=args.k)
            t2 = time.perf_counter()
            assert len(hits) == args.k
            s.search(q, k=args.k)
            t3 = time.perf_counter()
            enc.append(t1 - t0)
            srch.append(t2 - t1)
            total.append(t3 - t2)
    ms = lambda xs, p: 1000 * float(np.percentile(xs, p))  # noqa: E731
    print(f"# end-to-end text search, {date.today()}, {platform.machine()}, index {args.index} "
          f"({len(s)} vectors, {s.manifest['index_type']}, model {s.model.get('name')}, {s.backbone.precision})")
    print("| stage | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| encode text | {ms(enc, 50):.2f} | {ms(enc, 99):.2f} |")
    print(f"| search + metadata (vector query) | {ms(srch, 50):.2f} | {ms(srch, 99):.2f} |")
    print(f"| end to end (text in, hits with metadata out) | {ms(total, 50):.2f} | {ms(total, 99):.2f} |")


if __name__ == "__main__":
    main()
