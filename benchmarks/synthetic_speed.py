"""Synthetic scene generator speed: tiles per second on one core, per class and overall, and change pairs.

    python benchmarks/synthetic_speed.py --n 300 --size 256
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

from geovl.data.synthetic import CLASSES, SceneConfig, generate_change_pair, generate_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="tiles for the overall rate")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    config = SceneConfig(size=args.size)
    print(f"# synthetic generator, {date.today()}, {platform.machine()}, one process, {args.size} px tiles")
    start = time.perf_counter()
    for i in range(args.n):
        generate_scene(0, i, config)
    overall = args.n / (time.perf_counter() - start)
    print("| class | ms/tile |")
    print("|---|---|")
    for label in CLASSES:
        start = time.perf_counter()
        for i in range(args.per_class):
            generate_scene(1, i, config, label=label)
        print(f"| {label} | {1000 * (time.perf_counter() - start) / args.per_class:.1f} |")
    start = time.perf_counter()
    for i in range(args.pairs):
        generate_change_pair(2, i, config)
    pairs = args.pairs / (time.perf_counter() - start)
    print(f"\noverall: {overall:.1f} tiles/s ({overall * 60:.0f} tiles/min); change pairs: {pairs:.1f} pairs/s")


if __name__ == "__main__":
    main()
