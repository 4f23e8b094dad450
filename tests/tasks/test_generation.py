"""The generation task with the tiny generator (32 px tiles, 2-3 steps): deterministic for a seed, different for
another seed or GSD, image k of n seeded seed + k, tiled scenes and outpainting (the original pixels kept), the
pipeline's limits, bad inputs named before sampling, and PNGs that carry their settings (atomically written)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geovl.models.generator import load_generator
from geovl.tasks.generation import (
    SETTINGS_CHUNK,
    GenerationPipeline,
    check_options,
    encode_png,
    image_settings,
    read_png_settings,
    save_png,
)
from tests.generation_fixtures import TinyGenerator, make_tiny_generator

PROMPT = "a river through farmland"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGenerator:
    return make_tiny_generator(tmp_path_factory.mktemp("task_generation"))


@pytest.fixture(scope="module")
def pipe(tiny: TinyGenerator) -> GenerationPipeline:
    return GenerationPipeline(load_generator(tiny.folder, backbone=tiny.backbone, device="cpu"), steps=2)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_same_seed_same_image_other_seed_or_gsd_another(pipe: GenerationPipeline) -> None:
    a = pipe(PROMPT, gsd=0.5, seed=3)
    b = pipe(PROMPT, gsd=0.5, seed=3)
    assert len(a.images) == 1 and a.images[0].size == (pipe.tile, pipe.tile) == (32, 32)
    assert np.array_equal(_pixels(a.images[0]), _pixels(b.images[0]))
    assert encode_png(a.images[0], image_settings(a)) == encode_png(b.images[0], image_settings(b))
    for other in (pipe(PROMPT, gsd=0.5, seed=4), pipe(PROMPT, gsd=64, seed=3), pipe(PROMPT, seed=3)):
        assert not np.array_equal(_pixels(a.images[0]), _pixels(other.images[0]))
    assert (a.steps, a.sampler, a.level, a.guidance, a.guidance_resolution) == (2, "ddpm", 18, 4.0, 4.0)


def test_n_images_are_seeded_seed_plus_k(pipe: GenerationPipeline) -> None:
    out = pipe(PROMPT, gsd=10, seed=5, n=3)
    assert out.prompts == [PROMPT] * 3 and len(out.images) == 3
    single = pipe(PROMPT, gsd=10, seed=7)
    assert np.array_equal(_pixels(out.images[2]), _pixels(single.images[0]))
    assert [image_settings(out, k)["seed"] for k in range(3)] == [5, 6, 7]
    assert not np.array_equal(_pixels(out.images[0]), _pixels(out.images[1]))
    with pytest.raises(ValueError, match="out of range"):
        image_settings(out, 3)


def test_settings_default_to_the_model_and_resolution_guidance_is_separate(tiny: TinyGenerator,
                                                                           pipe: GenerationPipeline) -> None:
    default = GenerationPipeline(pipe.model)
    out = default(PROMPT, gsd=2, seed=0)
    assert out.steps == pipe.model.config.default_steps == 4 and out.guidance == 4.0
    split = GenerationPipeline(pipe.model, steps=2, guidance=3.0, guidance_resolution=1.0, sampler="euler")(
        PROMPT, gsd=2, seed=0)
    assert (split.guidance, split.guidance_resolution, split.sampler) == (3.0, 1.0, "euler")
    settings = image_settings(split)
    assert settings == {**settings, "prompt": PROMPT, "gsd": 2, "level": 16, "level_gsd": 2.0, "seed": 0,
                        "steps": 2, "guidance": 3.0, "guidance_resolution": 1.0, "sampler": "euler", "width": 32,
                        "height": 32, "model": str(tiny.folder)}
    assert settings["software"].startswith("geovl ")


def test_scenes_larger_than_a_tile_and_outpainting_keeps_the_pixels(pipe: GenerationPipeline) -> None:
    scene = pipe(PROMPT, gsd=1, seed=1, size=(64, 48))
    assert scene.images[0].size == (64, 48) and (scene.width, scene.height) == (64, 48)
    tile = pipe(PROMPT, gsd=1, seed=1).images[0]
    out = pipe.extend(tile, PROMPT, 1, width=64, height=64, seed=2)
    big = _pixels(out.images[0])
    assert big.shape == (64, 64, 3)
    assert np.array_equal(big[16:48, 16:48], _pixels(tile))  # centred, unchanged
    assert big[:16].std() > 0  # the rest was sampled
    corner = pipe.extend(tile, PROMPT, 1, width=64, height=32, offset=(0, 0), seed=2)
    assert np.array_equal(_pixels(corner.images[0])[:, :32], _pixels(tile))
    with pytest.raises(ValueError, match="larger than the scene"):
        pipe.extend(Image.new("RGB", (64, 64)), PROMPT, width=48, height=48)


@pytest.mark.parametrize(("call", "message"), [
    ({"prompt": ""}, "the prompt is empty"),
    ({"prompt": "   "}, "the prompt is empty"),
    ({"prompt": ["a forest", ""]}, "the prompt is empty"),
    ({"gsd": -1.0}, "gsd must be a positive number"),
    ({"gsd": float("nan")}, "gsd must be a positive number"),
    ({"gsd": "10"}, "gsd must be a number of metres per pixel"),
    ({"seed": -1}, "seed must be an integer in 0.."),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"n": 0}, "the number of images (n) must be an integer in 1.."),
    ({"size": 30}, "width must be 32..1024 px"),
    ({"size": 34}, "width must be a multiple of 4 px, got 34"),
    ({"size": (64, 2048)}, "height must be 32..1024 px"),
    ({"size": "big"}, "size must be an integer or (width, height)"),
])
def test_bad_inputs_are_named(pipe: GenerationPipeline, call: dict[str, Any], message: str) -> None:
    kwargs = {"prompt": PROMPT, **call}
    with pytest.raises(ValueError, match=re.escape(message)):
        pipe(kwargs.pop("prompt"), **kwargs)


@pytest.mark.parametrize(("settings", "message"), [
    ({"steps": 0}, "steps must be an integer in 1..1000, got 0"),
    ({"steps": 1001}, "steps must be an integer in 1..1000"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"guidance": -1}, "guidance must be a number in [0, 50]"),
    ({"guidance_resolution": 51}, "guidance_resolution must be a number in [0, 50]"),
    ({"sampler": "plms"}, "unknown sampler 'plms'; choose from ddim, ddpm, euler"),
    ({"max_side": 16}, "max_side must be an integer in 32..1024"),
    ({"steps": 20, "max_steps": 10}, "steps must be an integer in 1..10"),
])
def test_bad_pipeline_settings_are_named(pipe: GenerationPipeline, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GenerationPipeline(pipe.model, **settings)


def test_the_pipelines_max_side_and_image_limit() -> None:
    with pytest.raises(ValueError, match=re.escape("5 images asked for; the limit is 4")):
        check_options(["a", "b", "c", "d", "e"], max_images=4)
    check_options(["a", "b"], n=2, max_images=4)


def test_max_side_is_enforced(pipe: GenerationPipeline) -> None:
    small = GenerationPipeline(pipe.model, steps=2, max_side=48)
    assert small(PROMPT, size=48).images[0].size == (48, 48)
    with pytest.raises(ValueError, match=re.escape("width must be 32..48 px")):
        small(PROMPT, size=(64, 32))
    with pytest.raises(ValueError, match=re.escape("height must be 32..48 px")):
        small.extend(Image.new("RGB", (32, 32)), PROMPT, width=48, height=52)


# ---------------------------------------------------------------- PNG files


def test_png_settings_round_trip_and_are_readable_chunks(pipe: GenerationPipeline, tmp_path: Path) -> None:
    out = pipe("une rivière à travers des champs", gsd=None, seed=9)
    settings = image_settings(out)
    path = save_png(out.images[0], tmp_path / "sub" / "x.png", settings)
    assert path == tmp_path / "sub" / "x.png" and sorted(p.name for p in path.parent.iterdir()) == ["x.png"]
    assert read_png_settings(path) == settings and read_png_settings(path.read_bytes()) == settings
    assert settings["gsd"] is None and settings["level"] == 0 and settings["level_gsd"] is None
    with Image.open(path) as image:
        assert np.array_equal(_pixels(image), _pixels(out.images[0]))
        text = dict(image.text)
    assert text["prompt"] == "une rivière à travers des champs" and text["seed"] == "9"
    assert text["gsd"] == "null" and text["sampler"] == "ddpm" and SETTINGS_CHUNK in text


def test_png_refusals_leave_nothing_behind(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match=r"written as \.png files"):
        save_png(image, tmp_path / "x.jpg", {"prompt": "a"})
    with pytest.raises(ValueError, match="cannot be a PNG text chunk name"):
        save_png(image, tmp_path / "x.png", {"": 1})
    assert list(tmp_path.iterdir()) == []
    plain = tmp_path / "plain.png"
    image.save(plain)
    with pytest.raises(ValueError, match="no geovl generation settings"):
        read_png_settings(plain)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot be read as a PNG"):
        read_png_settings(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        read_png_settings(tmp_path / "missing.png")
