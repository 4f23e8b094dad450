"""Change captioning: the pairs-to-captions pipeline (:mod:`~geovl.tasks.change_captioning.pipeline`)."""

from geovl.tasks.change_captioning.pipeline import ChangeBatch, ChangeCaptioningPipeline, ChangeCaptions

__all__ = ["ChangeBatch", "ChangeCaptioningPipeline", "ChangeCaptions"]
