"""Generation: text (and a ground sample distance) to images (:mod:`~geovl.tasks.generation.pipeline`) and PNG files
that carry their settings (:mod:`~geovl.tasks.generation.png`)."""

from geovl.tasks.generation.pipeline import (
    MAX_SEED,
    GenerationPipeline,
    check_options,
    image_settings,
    parse_size,
    size_from,
)
from geovl.tasks.generation.png import SETTINGS_CHUNK, encode_png, read_png_settings, save_png

__all__ = ["MAX_SEED", "SETTINGS_CHUNK", "GenerationPipeline", "check_options", "encode_png", "image_settings",
           "parse_size", "read_png_settings", "save_png", "size_from"]
