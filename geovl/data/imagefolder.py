"""ImageFolder classification sets (EuroSAT, AID, RESISC45, UCM...): ``<root>/<class>/<image>``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from geovl.data.common import (
    IMAGE_EXTENSIONS,
    PathLike,
    SampleList,
    prettify_class_name,
    require_dir,
)
from geovl.data.samples import ImageTextSample

__all__ = ["ImageFolderReader", "prettify_class_name"]


def _scan_images(folder: Path, extensions: frozenset[str]) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted forward-slash paths relative to it."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(folder)
        for fname in filenames:
            if not fname.startswith(".") and Path(fname).suffix.lower() in extensions:
                found.append((rel_dir / fname).as_posix())
    return sorted(found)


class ImageFolderReader(SampleList[ImageTextSample]):
    """One sample per image in ``<root>/<class>/...``, labelled with the class folder name.

    Args:
        root: the folder holding one sub-folder per class (hidden folders are ignored).
        caption_template: when given (e.g. ``"a satellite image of {}"``), each sample gets one caption with
            the prettified class name filled in (``AnnualCrop`` -> ``"annual crop"``).
        classes: use exactly these class folders, in this order (default: every sub-folder, sorted by name).
        extensions: image file suffixes to include (case-insensitive).

    ``classes`` (sorted, deterministic) and ``class_to_idx`` are exposed; ``meta["class_index"]`` is the
    label's position in ``classes``. ``image_id`` is ``<class>/<file>``. The set has no split (``None``).

    Raises:
        FileNotFoundError: ``root`` or a requested class folder does not exist.
        ValueError: no class folders, or a class folder holds no images.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        caption_template: str | None = None,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        root_path = require_dir(Path(root), "an ImageFolder root with one sub-folder per class")
        if caption_template is not None and "{}" not in caption_template:
            raise ValueError(f"caption_template must contain '{{}}' for the class name, got {caption_template!r}")
        exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        if classes is None:
            class_names = sorted(
                entry.name for entry in os.scandir(root_path) if entry.is_dir() and not entry.name.startswith(".")
            )
            if not class_names:
                raise ValueError(f"{root_path}: no class sub-folders found (expected <root>/<class>/<image>)")
        else:
            class_names = list(classes)
            for name in class_names:
                require_dir(root_path / name, f"the class folder for class {name!r}")

        samples: list[ImageTextSample] = []
        empty: list[str] = []
        for index, name in enumerate(class_names):
            files = _scan_images(root_path / name, exts)
            if not files:
                empty.append(name)
            caption = [caption_template.format(prettify_class_name(name))] if caption_template else []
            for rel in files:
                samples.append(
                    ImageTextSample(
                        image_id=f"{name}/{rel}",
                        image=str(root_path / name / rel),
                        captions=list(caption),
                        label=name,
                        split=None,
                        meta={"class_index": index},
                    )
                )
        if empty:
            raise ValueError(
                f"{root_path}: class folder(s) {', '.join(empty)} contain no images "
                f"(looked for {', '.join(sorted(exts))}); remove them or pass classes= to choose the classes"
            )
        super().__init__(samples, str(root_path))
        self.root = root_path
        self.classes: list[str] = class_names
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(class_names)}
        self.caption_template = caption_template

    def class_prompts(self, template: str | None = None) -> list[str]:
        """One prompt per class (``template`` or the reader's ``caption_template``), in ``classes`` order."""
        tpl = template or self.caption_template or "{}"
        return [tpl.format(prettify_class_name(c)) for c in self.classes]
