"""Change captioning: the pairs-to-captions pipeline (:mod:`~geovl.tasks.change_captioning.pipeline`), GeoTIFF pairs
(:mod:`~geovl.tasks.change_captioning.geo`) and resumable pairs-folder runs (:mod:`~geovl.tasks.change_captioning.
batch`)."""

from geovl.tasks.change_captioning.batch import (
    ChangeCaptionRunConfig,
    ChangeCaptionRunSummary,
    find_pairs,
    read_change_captions,
    run_change_captions,
)
from geovl.tasks.change_captioning.geo import (
    AlignedPair,
    GeoPairResult,
    PairChip,
    align_pair,
    describe_geotiff_pair,
    is_georeferenced,
    pair_chips,
    write_heatmap,
)
from geovl.tasks.change_captioning.pipeline import ChangeBatch, ChangeCaptioningPipeline, ChangeCaptions

__all__ = ["AlignedPair", "ChangeBatch", "ChangeCaptionRunConfig", "ChangeCaptionRunSummary",
           "ChangeCaptioningPipeline", "ChangeCaptions", "GeoPairResult", "PairChip", "align_pair",
           "describe_geotiff_pair", "find_pairs", "is_georeferenced", "pair_chips", "read_change_captions",
           "run_change_captions", "write_heatmap"]
