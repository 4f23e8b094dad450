"""Find checkpoint files on disk (or fetch them when online) and read them into state dicts.

Lookup order for a registry checkpoint: ``$GEOVL_HOME/checkpoints/<file name>`` (default
``~/.cache/geovl/checkpoints``), then the Hugging Face cache, then the network when it is allowed. Offline and not
cached raises :class:`CheckpointNotFoundError` saying exactly where to put the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from geovl.io.fs import sha256_file
from geovl.models.registry import Bundled, CheckpointSpec, HubFile, HubRepo, OpenClipTag, UrlFile

logger = logging.getLogger(__name__)


class CheckpointNotFoundError(FileNotFoundError):
    """The weights for a checkpoint are not on this machine and could not be downloaded."""


class ChecksumError(ValueError):
    """A checkpoint file's sha256 does not match the registry."""


def geovl_home() -> Path:
    """geovl's cache folder: ``$GEOVL_HOME`` or ``~/.cache/geovl``."""
    return Path(os.environ.get("GEOVL_HOME", Path.home() / ".cache" / "geovl"))


def checkpoint_dir() -> Path:
    """Where users may drop checkpoint files by hand: ``<geovl_home>/checkpoints``."""
    return geovl_home() / "checkpoints"


def offline() -> bool:
    """True when the environment asks for no network (``HF_HUB_OFFLINE`` or ``GEOVL_OFFLINE``)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "GEOVL_OFFLINE"))


def verify_sha256(path: Path, expected: str | None) -> None:
    """Raise :class:`ChecksumError` when ``expected`` is given and differs from the file's digest."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the registry's {expected}. The file is corrupt or a "
            "different release; delete it and download it again."
        )


def _manual_path(spec: CheckpointSpec) -> Path | None:
    """The path under :func:`checkpoint_dir` where a user may place this checkpoint by hand."""
    source = spec.source
    if isinstance(source, (HubFile, UrlFile)):
        return checkpoint_dir() / Path(source.filename).name
    if isinstance(source, HubRepo):
        return checkpoint_dir() / source.repo_id.replace("/", "--")
    return None


def local_checkpoint(spec: CheckpointSpec) -> Path | None:
    """The local file or folder holding ``spec``'s weights, or ``None``; never touches the network."""
    manual = _manual_path(spec)
    if manual is not None and manual.exists():
        return manual
    source = spec.source
    if isinstance(source, Bundled):
        return source.path() if source.path().is_dir() else None
    if isinstance(source, HubFile):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.repo_id, source.filename, revision=source.revision)
        return Path(cached) if isinstance(cached, str) else None
    if isinstance(source, HubRepo):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(source.repo_id, revision=source.revision, local_files_only=True))
        except Exception:  # huggingface_hub raises several types for "not cached"
            return None
    if isinstance(source, OpenClipTag):
        return _openclip_cached(spec)
    return None


def _openclip_cached(spec: CheckpointSpec) -> Path | None:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.architecture, spec.source.tag)  # type: ignore[union-attr]
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        # open_clip writes 'org/repo/' or 'org/repo/filename'
        repo, _, rest = hub.partition("/")
        name, _, filename = rest.partition("/")
        for fname in ([filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
            cached = try_to_load_from_cache(f"{repo}/{name}", fname)
            if isinstance(cached, str):
                return Path(cached)
    return None


def _missing_message(spec: CheckpointSpec, why: str) -> str:
    manual = _manual_path(spec)
    source = spec.source
    where = source.url
    lines = [f"Checkpoint '{spec.name}' ({spec.family} {spec.architecture}) is not on this machine: {why}."]
    if isinstance(source, HubRepo):
        lines.append(f"Download the repository {where} (e.g. `huggingface-cli download {source.repo_id}`) ")
        lines.append(f"and place its files in {manual} , or pass the folder path as the model name.")
    elif manual is not None:
        lines.append(f"Download {where} and place it at {manual} , or pass the file path as the model name")
        lines.append("(e.g. `geovl embed --model /path/to/file.pt` with `--arch " + spec.architecture + "`).")
    elif isinstance(source, Bundled):
        lines.append(f"It ships {where}: this installation lacks the folder; reinstall geovl, or pass a trained "
                     "folder path as the model name.")
    else:
        lines.append(f"It comes from {where}; run once with network access to cache it.")
    return " ".join(lines)


def fetch_checkpoint(spec: CheckpointSpec) -> Path:
    """Local path of ``spec``'s weights, downloading them when allowed.

    Raises:
        CheckpointNotFoundError: offline (or the download failed) and the weights are not cached; the message
            names the file to download and where to put it.
    """
    found = local_checkpoint(spec)
    if found is not None:
        return found
    if offline():
        raise CheckpointNotFoundError(_missing_message(spec, "offline mode is on and it is not cached"))
    source = spec.source
    try:
        if isinstance(source, HubFile):
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(source.repo_id, source.filename, revision=source.revision))
        if isinstance(source, HubRepo):
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source.repo_id, revision=source.revision))
        if isinstance(source, UrlFile):
            return _download_url(source.url, _manual_path(spec) or checkpoint_dir() / source.filename)
        if isinstance(source, OpenClipTag):
            import open_clip

            cfg = open_clip.get_pretrained_cfg(spec.architecture, source.tag)
            return Path(open_clip.download_pretrained(cfg))
    except CheckpointNotFoundError:
        raise
    except Exception as exc:  # network errors come in many types; report them with the manual route
        raise CheckpointNotFoundError(_missing_message(spec, f"the download failed ({exc})")) from exc
    raise CheckpointNotFoundError(_missing_message(spec, "its source type is not downloadable"))


def _download_url(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, so a broken download never leaves a partial file."""
    import urllib.request

    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with urllib.request.urlopen(url) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _member_to_extract(names: list[str]) -> str | None:
    """Pick the weights file inside a distribution zip (the newest ``epoch_N.pt`` when there are several)."""
    candidates = [n for n in names if n.endswith(_WEIGHT_SUFFIXES) and not n.startswith("__MACOSX")]
    if not candidates:
        return None

    def epoch_key(name: str) -> tuple[int, str]:
        stem = Path(name).stem
        digits = stem.rsplit("_", 1)[-1]
        return (int(digits) if stem.startswith("epoch_") and digits.isdigit() else -1, name)

    return max(candidates, key=epoch_key)


def _is_torch_zip(names: list[str]) -> bool:
    # torch.save writes a zip whose members are '<archive>/data.pkl', '<archive>/data/0', ...
    return any(n.endswith("data.pkl") for n in names)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read model weights from a checkpoint file into a flat ``{name: tensor}`` dict on the CPU.

    Handles ``.safetensors``; ``torch.save`` files (``.pt``/``.pth``/``.bin``) loaded with ``weights_only=True``;
    open_clip training checkpoints (``{"state_dict": ...}``) and DDP / ``torch.compile`` key prefixes
    (``module.``, ``_orig_mod.``); and distribution ``.zip`` archives that contain one of those (SkyCLIP).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: checkpoint file is empty (0 bytes); the download was probably interrupted")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return unwrap_state_dict(load_file(str(path)), str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not _is_torch_zip(names):
                member = _member_to_extract(names)
                if member is None:
                    raise ValueError(f"{path}: zip archive holds no weights file ({', '.join(_WEIGHT_SUFFIXES)})")
                with tempfile.TemporaryDirectory() as tmp:
                    target = Path(tmp) / Path(member).name
                    with zf.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    logger.info("read %s from %s", member, path)
                    return read_state_dict(target)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: not a readable weights file ({type(exc).__name__}: {exc}). geovl loads .safetensors and "
            "torch.save files with weights_only=True (no arbitrary pickles), and zips that contain one."
        ) from exc
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: Any, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Turn whatever a checkpoint file holds into ``{name: tensor}``: unwrap training dicts, strip prefixes."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{origin}: expected a dict of tensors, got {type(obj).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    if not state:
        raise ValueError(f"{origin}: no tensors found in the checkpoint")
    return state
