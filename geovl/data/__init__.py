"""Dataset readers shared by training, evaluation and indexing: one module per on-disk format.

Every reader yields the fixed-key sample dicts of :mod:`geovl.data.samples` (``ImageTextSample`` or
``ChangeCaptionSample``). Images are returned as paths (or encoded bytes for shards and arrow datasets) and
are never decoded when a reader is built; pass them to :func:`geovl.io.loading.load_image`.

Indexable sources are ``Sequence``-like (``len`` and ``reader[i]``); tar shards are iterable only.
:func:`open_dataset` opens a path by format name, and :func:`autodetect` guesses the name from the layout.
"""

from geovl.data.change_sentences import NO_CHANGE_SENTENCES, is_no_change_sentence
from geovl.data.coco import CocoReader
from geovl.data.common import IMAGE_EXTENSIONS, MissingPolicy, SampleList, SplitArg, prettify_class_name
from geovl.data.formats import FORMATS, DatasetReader, autodetect, open_dataset
from geovl.data.gaia import GaiaReader
from geovl.data.git10m import Git10MReader
from geovl.data.imagefolder import ImageFolderReader
from geovl.data.karpathy import KarpathyReader
from geovl.data.levircc import LevirCCReader, SecondCCReader
from geovl.data.samples import ChangeCaptionSample, ImageTextSample
from geovl.data.shards import WebDatasetReader
from geovl.data.skyscript import SKYSCRIPT_CAPTION_COLUMNS, SkyScriptReader
from geovl.data.tabular import TableColumns, TableReader

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "NO_CHANGE_SENTENCES",
    "SKYSCRIPT_CAPTION_COLUMNS",
    "ChangeCaptionSample",
    "CocoReader",
    "DatasetReader",
    "GaiaReader",
    "Git10MReader",
    "ImageFolderReader",
    "ImageTextSample",
    "KarpathyReader",
    "LevirCCReader",
    "MissingPolicy",
    "SampleList",
    "SecondCCReader",
    "SkyScriptReader",
    "SplitArg",
    "TableColumns",
    "TableReader",
    "WebDatasetReader",
    "autodetect",
    "is_no_change_sentence",
    "open_dataset",
    "prettify_class_name",
]
