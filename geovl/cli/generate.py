"""``geovl generate``: images from a prompt and a ground sample distance, written as PNGs that carry their settings.

Rules:

* ``--gsd M`` conditions on M metres per pixel (mapped to the nearest zoom level, 0.5 m .. 128 m); left out, no
  resolution condition. ``--steps``, ``--guidance`` and ``--guidance-resolution`` left out take the generator's
  defaults.
* Size: ``--size N`` (square) or ``--width`` / ``--height`` (one of them alone: a square); none: one tile. Larger
  than a tile gives a seamless tiled scene.
* ``--n N`` writes N images seeded ``--seed`` .. ``--seed + N - 1`` as ``OUT-0.png`` .. ``OUT-<N-1>.png``; one image
  is written to ``--out`` itself.
* ``--extend IMAGE`` outpaints a scene of the size asked (needed) around IMAGE, kept unchanged (centred, or at
  ``--offset X,Y``).
* Every input is checked before the generator loads where it can be, and every image is generated before any file
  is written: a bad input writes nothing. Files are written atomically, with the settings in PNG text chunks
  (:func:`geovl.tasks.generation.read_png_settings` reads them back).
* Prints where each file was written and the settings (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from geovl.cli.common import PRECISIONS, add_command, given, option, print_json

_LOAD = "geovl.models.generator:load_generator"
_CALL = "geovl.tasks.generation.pipeline:GenerationPipeline"


def add_parser(sub: Any) -> None:
    p = add_command(sub, "generate", "generate remote-sensing images from text at a ground sample distance "
                                     "(tiles, seamless scenes larger than a tile, outpainting around an image)",
                    cmd_generate)
    p.add_argument("prompt", metavar="PROMPT", help="what to draw, e.g. 'a river through farmland'")
    p.add_argument("--out", "--output", "-o", dest="out", required=True, metavar="OUT.png",
                   help="the PNG to write (with --n N: OUT-0.png .. OUT-<N-1>.png)")
    p.add_argument("--gsd", type=float, default=None, metavar="M",
                   help="metres per pixel wanted (0.5 .. 128, nearest zoom level); default: no resolution condition")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the generator's, e.g. 50)")
    p.add_argument("--guidance", type=float, default=None,
                   help="text guidance weight, 0..50 (1: none; default: the generator's, e.g. 4)")
    p.add_argument("--guidance-resolution", type=float, default=None, metavar="G",
                   help="resolution (GSD) guidance weight, 0..50 (default: --guidance)")
    option(p, "--seed", type=int, source=f"{_CALL}.__call__.seed", help="seed of the (first) image")
    option(p, "--sampler", source=f"{_CALL}.sampler", help="sampler: ddim, ddpm or euler")
    p.add_argument("--size", type=int, default=None, metavar="N", help="square side in pixels (default: one tile)")
    p.add_argument("--width", type=int, default=None, metavar="W", help="width in pixels (alone: a square)")
    p.add_argument("--height", type=int, default=None, metavar="H", help="height in pixels (alone: a square)")
    p.add_argument("--n", type=int, default=1, metavar="N", help="images to write, seeded seed .. seed+N-1")
    p.add_argument("--extend", metavar="IMAGE", default=None,
                   help="outpaint around IMAGE (kept unchanged) to the size given by --size or --width / --height")
    p.add_argument("--offset", default=None, metavar="X,Y",
                   help="with --extend: where IMAGE's top-left corner goes in the scene (default: centred)")
    option(p, "--model", "-m", source=f"{_LOAD}.model", help="generator: registry name or folder")
    option(p, "--device", source=f"{_LOAD}.device", help="auto (CUDA when present), cpu, cuda, cuda:N")
    option(p, "--precision", choices=PRECISIONS, source=f"{_LOAD}.precision",
           help="weight precision (auto: fp16 UNet on CUDA, fp32 on CPU)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _parse_offset(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().lstrip("-").isdigit() for part in parts):
        raise ValueError(f"--offset must be X,Y in pixels (e.g. 64,0), got {text!r}")
    return int(parts[0]), int(parts[1])


def _scene_size(args: argparse.Namespace) -> int | tuple[int, int] | None:
    from geovl.tasks.generation import size_from

    if args.size is not None and (args.width is not None or args.height is not None):
        raise ValueError("give --size N, or --width W / --height H, not both")
    return args.size if args.size is not None else size_from(args.width, args.height)


def output_paths(out: str, n: int) -> list[Path]:
    """``out`` for one image, else ``<stem>-<k><suffix>`` next to it for k in 0..n-1."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: generated images are PNG files (the settings travel in PNG text chunks); "
                         "give a path ending in .png")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(n)]


def _check(args: argparse.Namespace) -> tuple[list[Path], int | tuple[int, int] | None, tuple[int, int] | None]:
    """Everything that can be checked before the generator loads."""
    from geovl.tasks.generation import check_options

    check_options(args.prompt, args.gsd, steps=args.steps, guidance=args.guidance,
                  guidance_resolution=args.guidance_resolution, n=args.n, **given(args, "seed", "sampler"))
    paths = output_paths(args.out, args.n)
    for path in paths:
        if path.is_dir():
            raise ValueError(f"--out {path} is a folder; give a .png file path")
    size = _scene_size(args)
    offset = _parse_offset(args.offset)
    if args.extend is not None:
        if not Path(args.extend).is_file():
            raise FileNotFoundError(f"--extend {args.extend}: no such file")
        if size is None:
            raise ValueError("--extend needs the size of the scene to outpaint: --size N, or --width W --height H")
    elif offset is not None:
        raise ValueError("--offset places the --extend image; give --extend IMAGE too")
    return paths, size, offset


def cmd_generate(args: argparse.Namespace) -> int:
    from geovl.models.generator import load_generator
    from geovl.tasks.generation import GenerationPipeline, image_settings, parse_size, save_png

    paths, size, offset = _check(args)
    model = load_generator(**given(args, "model", "device", "precision"))
    pipe = GenerationPipeline(model, steps=args.steps, guidance=args.guidance,
                              guidance_resolution=args.guidance_resolution, **given(args, "sampler"))
    seed = args.seed if args.seed is not None else 0
    if args.extend is None:
        out = pipe(args.prompt, args.gsd, seed=seed, size=size, n=args.n)
        items = [(image, image_settings(out, k)) for k, image in enumerate(out.images)]
        seconds = out.seconds
    else:
        from geovl.io.loading import load_image

        source = load_image(args.extend)
        width, height = parse_size(size, pipe.tile)
        items, seconds = [], 0.0
        for k in range(args.n):  # every image before any file is written
            out = pipe.extend(source, args.prompt, args.gsd, width=width, height=height, offset=offset, seed=seed + k)
            items.append((out.images[0], {**image_settings(out), "extended_from": str(args.extend)}))
            seconds += out.seconds
    for path, (image, settings) in zip(paths, items, strict=True):
        save_png(image, path, settings)
    _report(args, paths, [settings for _, settings in items], seconds)
    return 0


def _report(args: argparse.Namespace, paths: list[Path], settings: list[dict[str, Any]], seconds: float) -> None:
    if args.json:
        print_json({"files": [str(p) for p in paths], "seeds": [s["seed"] for s in settings],
                    "settings": settings[0], "seconds": round(seconds, 3)}, indent=None)
        return
    for path, item in zip(paths, settings, strict=True):
        print(f"wrote {path} ({item['width']}x{item['height']} px, seed {item['seed']})")
    first = settings[0]
    gsd = ("no resolution condition" if first["gsd"] is None
           else f"gsd {first['gsd']:g} m -> zoom level {first['level']} ({first['level_gsd']:g} m/px)")
    extended = f" · extended from {first['extended_from']}" if "extended_from" in first else ""
    print(f"prompt {first['prompt']!r} · {gsd} · {first['steps']} {first['sampler']} steps · guidance "
          f"{first['guidance']:g} (resolution {first['guidance_resolution']:g}) · model {first['model']}{extended} · "
          f"{seconds:.1f} s")
