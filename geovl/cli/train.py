"""``geovl train KIND``: training runs (``clip``: contrastive fine-tuning; ``captioner``: a caption decoder on a frozen
backbone; both run under torchrun for DDP; ``change-captioner``: a change captioner on a frozen backbone, and
``diffusion``: a text- and resolution-conditioned generator, each in one process)."""

from __future__ import annotations

import argparse
from typing import Any

from geovl.cli.common import add_command, given, option


def add_parser(sub: Any) -> None:
    p = add_command(sub, "train", "train models (clip: contrastive fine-tuning; captioner: a caption decoder on a "
                                  "frozen backbone; both run under torchrun for DDP)")
    kinds = p.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    t = add_command(kinds, "clip", "contrastive (CLIP / SigLIP) fine-tuning of any registry model or architecture",
                    cmd_train_clip)
    _run_options(t, "geovl.training:train_clip.resume")
    t = add_command(kinds, "captioner", "train a captioner's decoder on a frozen backbone's cached image features, "
                                        "with periodic BLEU / CIDEr-D", cmd_train_captioner)
    _run_options(t, "geovl.training.captioner:train_captioner.resume")
    t = add_command(kinds, "change-captioner", "train a change captioner (fusion, change / no-change and mask heads, "
                                               "decoder) on a frozen backbone's cached features of synthetic and "
                                               "real-texture change pairs", cmd_train_change_captioner)
    _run_options(t, "geovl.training.change_captioner:train_change_captioner.resume")
    t = add_command(kinds, "diffusion", "train a text- and resolution (GSD)-conditioned generator (diffusers UNet on "
                                        "the frozen backbone's text features), with EMA and sample grids",
                    cmd_train_diffusion)
    _run_options(t, "geovl.training.diffusion:train_diffusion.resume")


def _run_options(t: Any, resume_source: str) -> None:
    t.add_argument("--config", required=True, help="YAML or JSON config (see configs/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set optim.steps=500 --set run.output=runs/x (repeatable)")
    t.add_argument("--output", default=None, help="run folder (same as --set run.output=...)")
    option(t, "--resume", source=resume_source,
           help="auto: continue from the run folder's latest checkpoint; no: refuse a folder that has one; "
                "or a checkpoint folder")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def cmd_train_clip(args: argparse.Namespace) -> int:
    from geovl._optional import require_all
    from geovl.training import load_config, train_clip
    from geovl.training.config import required_packages

    overrides = list(args.overrides) + ([f"run.output={args.output}"] if args.output else [])
    config = load_config(args.config, overrides)
    require_all(required_packages(config), "this training run")  # before any work starts
    result = train_clip(config, progress=not args.quiet, **given(args, "resume"))
    if result.final is not None:
        print(f"trained {result.steps} steps; model written to {result.final}")
        for row in result.evals[-1:]:
            for key, value in row.items():
                if key != "step":
                    print(f"  {key}: {value:.4g}")
    return 0


def _report(result: Any, what: str) -> int:
    if result.final is not None:
        print(f"trained {result.steps} steps; {what} written to {result.final}")
        for row in result.evals[-1:]:
            for key, value in row.items():
                if key != "step":
                    print(f"  {key}: {value:.4g}")
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides) + ([f"run.output={args.output}"] if args.output else [])


def cmd_train_captioner(args: argparse.Namespace) -> int:
    from geovl.training.captioner import train_captioner
    from geovl.training.captioner_config import load_captioner_config

    config = load_captioner_config(args.config, _overrides(args))
    return _report(train_captioner(config, progress=not args.quiet, **given(args, "resume")), "captioner")


def cmd_train_change_captioner(args: argparse.Namespace) -> int:
    from geovl.training.change_captioner import train_change_captioner
    from geovl.training.change_captioner_config import load_change_config

    config = load_change_config(args.config, _overrides(args))
    return _report(train_change_captioner(config, progress=not args.quiet, **given(args, "resume")),
                   "change captioner")


def cmd_train_diffusion(args: argparse.Namespace) -> int:
    from geovl.training.diffusion import train_diffusion
    from geovl.training.diffusion_config import load_diffusion_config

    config = load_diffusion_config(args.config, _overrides(args))
    return _report(train_diffusion(config, progress=not args.quiet, **given(args, "resume")), "generator")
