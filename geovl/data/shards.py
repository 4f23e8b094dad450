"""Webdataset tar shards as written by img2dataset (GAIA, RS5M, LAION-style sets).

Each shard is a plain tar; the members of one sample share a key and sit next to each other::

    000000000.png   000000000.txt   000000000.json   000000001.png ...

The key is the member path up to the first dot of its file name (the webdataset convention), and the rest is
the extension. Shards are read with the standard library's streaming ``tarfile`` mode, so nothing is extracted
to disk and member names cannot escape a folder; ``.tar.gz`` shards work too.
"""

from __future__ import annotations

import glob
import json
import sys
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from geovl.data.common import MissingPolicy, PathLike, canonical_split, check_policy, clean_caption, logger
from geovl.data.samples import ImageTextSample

__all__ = ["SHARD_IMAGE_EXTENSIONS", "WebDatasetReader", "list_shards"]

#: Image member extensions, in order of preference when a sample has several.
SHARD_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp")
_SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def list_shards(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Expand a shard file, a folder of shards, a glob pattern, or a list of those, into sorted tar paths."""
    items = [paths] if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence) else list(paths)
    shards: list[Path] = []
    for item in items:
        p = Path(item)
        text = str(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.name.endswith(_SHARD_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{p}: no .tar shards in this folder (expected img2dataset webdataset output)")
            shards.extend(found)
        elif any(ch in text for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(text))
            if not matched:
                raise FileNotFoundError(f"{text}: the pattern matches no shard files")
            shards.extend(matched)
        elif p.is_file():
            shards.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such shard file or folder")
    return shards


def split_member(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        return name, ""
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


class WebDatasetReader(Iterable[ImageTextSample]):
    """Stream image-text samples from webdataset tar shards (iterable, not indexable).

    Args:
        paths: a shard, a folder of shards, a glob (``"train/*.tar"``) or a list of these.
        split: tag every sample with this split (img2dataset writes one output folder per split). The names
            ``validation`` / ``valid`` are stored as ``val``.
        captions_key: when a sample's ``.json`` has this key (a list or a string), it gives the captions; else
            the ``.txt`` member is the caption. GAIA's shards keep the five synthetic captions under
            ``captions`` and the web alt text in ``.txt`` (then found in ``meta["txt"]``).
        on_missing: a sample without an image member raises ``ValueError`` (``"error"``) or is dropped and
            counted in a log warning per shard (``"skip"``).

    ``image`` is the encoded bytes of the image member; ``image_id`` is the sample key; ``meta`` is the
    sample's ``.json`` (img2dataset: ``url``, ``key``, ``status``, ``width``, ``height``, ...) plus ``shard``.

    Inside a PyTorch ``DataLoader`` with several workers, each worker reads its own subset of shards.
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        split: str | None = None,
        captions_key: str | None = "captions",
        on_missing: MissingPolicy = "error",
    ) -> None:
        check_policy(on_missing)
        self.shards = list_shards(paths)
        self.split = canonical_split(split) if split is not None else None
        self.captions_key = captions_key
        self.on_missing = on_missing

    def __repr__(self) -> str:
        return f"WebDatasetReader({len(self.shards)} shards, split={self.split!r})"

    def _worker_shards(self) -> list[Path]:
        # Only consult torch when it is already imported: the reader itself does not need it.
        torch = sys.modules.get("torch")
        if torch is not None:
            info = torch.utils.data.get_worker_info()
            if info is not None:
                return self.shards[info.id :: info.num_workers]
        return self.shards

    def __iter__(self) -> Iterator[ImageTextSample]:
        for shard in self._worker_shards():
            yield from self.read_shard(shard)

    def read_shard(self, shard: Path) -> Iterator[ImageTextSample]:
        """The samples of one shard, in tar order."""
        skipped = 0
        key: str | None = None
        members: dict[str, bytes] = {}
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    mkey, ext = split_member(member.name)
                    if mkey != key:
                        if key is not None:
                            sample = self._make_sample(shard, key, members)
                            if sample is None:
                                skipped += 1
                            else:
                                yield sample
                        key, members = mkey, {}
                    fh = tar.extractfile(member)
                    if fh is not None and ext:
                        members[ext] = fh.read()
        except tarfile.TarError as exc:
            raise ValueError(f"{shard.name}: not a readable tar shard ({exc})") from exc
        if key is not None:
            sample = self._make_sample(shard, key, members)
            if sample is None:
                skipped += 1
            else:
                yield sample
        if skipped:
            logger.warning("%s: skipped %d sample(s) without an image member", shard.name, skipped)

    def _make_sample(self, shard: Path, key: str, members: dict[str, bytes]) -> ImageTextSample | None:
        image_ext = next((e for e in SHARD_IMAGE_EXTENSIONS if e in members), None)
        if image_ext is None:
            if self.on_missing == "error":
                found = ", ".join("." + e for e in sorted(members)) or "nothing"
                raise ValueError(
                    f"{shard.name}: sample {key} has no image member (found {found}; expected one of "
                    f"{', '.join('.' + e for e in SHARD_IMAGE_EXTENSIONS)}); "
                    "pass on_missing='skip' to drop it"
                )
            return None
        meta: dict[str, Any] = {}
        if "json" in members:
            try:
                parsed = json.loads(members["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{shard.name}: {key}.json is not valid JSON ({exc})") from exc
            if not isinstance(parsed, dict):
                raise ValueError(f"{shard.name}: {key}.json is not a JSON object")
            meta.update(parsed)
        txt = members["txt"].decode("utf-8", errors="replace") if "txt" in members else None
        captions: list[str]
        from_json = meta.pop(self.captions_key, None) if self.captions_key else None
        if isinstance(from_json, list):
            captions = [clean_caption(str(c)) for c in from_json if str(c).strip()]
        elif isinstance(from_json, str):
            captions = [clean_caption(from_json)] if from_json.strip() else []
        else:
            captions = [clean_caption(txt)] if txt and txt.strip() else []
            txt = None
        if txt is not None:
            meta["txt"] = txt
        meta["shard"] = shard.name
        return ImageTextSample(
            image_id=key,
            image=members[image_ext],
            captions=captions,
            label=None,
            split=self.split,
            meta=meta,
        )
