"""Captioning: the images-to-captions pipeline (:mod:`~geovl.tasks.captioning.pipeline`) and resumable batch runs
that write Parquet shards (:mod:`~geovl.tasks.captioning.batch`)."""

from geovl.tasks.captioning.pipeline import CaptionBatch, CaptioningPipeline, Captions

__all__ = ["CaptionBatch", "CaptioningPipeline", "Captions"]
