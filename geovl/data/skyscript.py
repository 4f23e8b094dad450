"""SkyScript caption CSVs (``filepath,title,title_multi_objects``).

SkyScript also ships one pickle of metadata per image (``box``, ``time``, ``center_tags``,
``surrounding_tags``). This reader never opens them: unpickling runs arbitrary code from the file, and these
files come from a third-party download, so they are untrusted. Convert them once in a sandboxed step to CSV
columns (e.g. ``lon,lat``) and they arrive here as ``meta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from geovl.data.common import MissingPolicy, PathLike, SampleList, SplitArg
from geovl.data.samples import ImageTextSample
from geovl.data.tabular import TableColumns, read_table, table_samples

__all__ = ["SKYSCRIPT_CAPTION_COLUMNS", "SkyScriptReader"]

#: The caption columns of the released CSVs: a short title of the centre object, and one listing several
#: objects in the scene.
SKYSCRIPT_CAPTION_COLUMNS = ("title", "title_multi_objects")


class SkyScriptReader(SampleList[ImageTextSample]):
    """Image-caption samples from a SkyScript caption CSV.

    Args:
        path: the CSV (e.g. ``SkyScript_train_top30pct_filtered_by_CLIP_openai.csv``).
        image_root: folder ``filepath`` is relative to; default the CSV's folder.
        caption_columns: which columns become captions, in order (default ``("title",)``; use
            :data:`SKYSCRIPT_CAPTION_COLUMNS` for both). Empty cells are dropped.
        split: the CSVs are one subset each, so every sample is tagged with this split name.
        require_images, on_missing: as for :class:`geovl.data.KarpathyReader`.

    ``image_id`` is ``filepath``. Extra columns (e.g. ``lon``, ``lat`` from converted metadata) go into
    ``meta``, with plain numbers parsed; the unused caption column is kept in ``meta`` as well.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        image_root: PathLike | None = None,
        caption_columns: Sequence[str] = ("title",),
        split: str | None = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        csv_path = Path(path)
        captions = (caption_columns,) if isinstance(caption_columns, str) else tuple(caption_columns)
        if not captions:
            raise ValueError("caption_columns must name at least one column")
        names, rows = read_table(csv_path, "csv")
        root = Path(image_root) if image_root is not None else csv_path.parent
        split_arg: SplitArg = split
        samples, missing = table_samples(
            csv_path.name,
            names,
            rows,
            TableColumns(image="filepath", text=captions, split=None),
            root,
            split=split_arg,
            require_images=require_images,
            on_missing=on_missing,
            expected="a SkyScript caption CSV with columns filepath,title,title_multi_objects",
            parse_numbers=True,
        )
        super().__init__(samples, str(csv_path))
        self.image_root = root
        self.caption_columns = captions
        self.missing = missing
