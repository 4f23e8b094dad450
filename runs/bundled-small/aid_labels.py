"""Write the AID scene class of every RSICD image named like AID (``<scene>_<n>.jpg``) as a ``filename,class`` CSV.

RSICD's scene images are AID images under their AID names, so the 200 RSICD validation images that the recipes
never train on double as a 30-class aerial scene test (the images named only by number have no class and are left
out). Usage, from the repository root:

    python runs/bundled-small/aid_labels.py ../shared/data/rsicd_train out/bundled/rsicd_aid_classes.csv
    geovl eval zeroshot ../shared/data/rsicd_train --split val --labels out/bundled/rsicd_aid_classes.csv \\
        --label-set aid --model geovl-rs-small
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path

from geovl.io.fs import atomic_write_text

SCENE = re.compile(r"^([a-z]+)_\d+\.jpg$")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="RSICD folder holding dataset.json")
    parser.add_argument("out", type=Path, help="CSV to write")
    args = parser.parse_args()
    images = json.loads((args.dataset / "dataset.json").read_text())["images"]
    rows = [(im["filename"], m.group(1)) for im in images if (m := SCENE.match(im["filename"]))]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["filename", "class"])
    writer.writerows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, buf.getvalue())
    print(f"{args.out}: {len(rows)} of {len(images)} images labelled, {len({c for _, c in rows})} classes")


if __name__ == "__main__":
    main()
