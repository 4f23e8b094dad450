"""The generator: resolution classes, guidance, determinism, tiling, outpainting, save / load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geovl.models import CheckpointNotFoundError, load_model
from geovl.models.diffusion import combine_guidance, tile_windows
from geovl.models.diffusion_conditioning import LEVELS, NULL_LEVEL, gsd_level, level_class, level_gsd
from geovl.models.generator import GENERATOR_CONFIG, load_generator, save_generator
from tests.generation_fixtures import make_tiny_generator, tiny_pipeline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_tiny_generator(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def pipe(tiny):  # type: ignore[no-untyped-def]
    return load_generator(tiny.folder, backbone=tiny.backbone)


def pixels(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(image, dtype=np.int16)


def test_gsd_maps_to_the_nearest_zoom_level() -> None:
    assert [level_gsd(lv) for lv in (10, 17, 18)] == [128.0, 1.0, 0.5]
    assert gsd_level(0.5) == 18 and gsd_level(1.0) == 17 and gsd_level(128) == 10
    assert gsd_level(10) == 14  # 17 - log2(10) = 13.68
    assert gsd_level(0.3) == 18 and gsd_level(0.05) == 18 and gsd_level(5000) == 10  # clamped
    assert gsd_level(None) == NULL_LEVEL
    assert all(gsd_level(level_gsd(lv)) == lv for lv in LEVELS)
    assert level_class(0) == 0 and level_class(10) == 1 and level_class(18) == 9
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="gsd"):
            gsd_level(bad)
    with pytest.raises(ValueError, match="zoom level"):
        level_class(9)


def test_guidance_combines_the_three_predictions() -> None:
    u, t, f = torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([4.0])
    assert combine_guidance(u, t, f, 1.0, 1.0).item() == 4.0  # no guidance: the full prediction
    assert combine_guidance(u, t, f, 3.0, 0.0).item() == 4.0  # text only: 1 + 3 * (2 - 1)
    assert combine_guidance(u, t, f, 2.0, 5.0).item() == 1 + 2 * 1 + 5 * 2
    assert combine_guidance(u, None, f, 2.0, 2.0).item() == combine_guidance(u, t, f, 2.0, 2.0).item()


def test_tile_windows_cover_the_canvas_with_overlap() -> None:
    assert tile_windows(16, 16) == [0]
    assert tile_windows(40, 16) == [0, 8, 16, 24]
    assert tile_windows(20, 16) == [0, 4]
    with pytest.raises(ValueError, match="smaller than one tile"):
        tile_windows(8, 16)


def test_same_seed_same_image_and_gsd_or_seed_changes_it(pipe) -> None:  # type: ignore[no-untyped-def]
    a = pipe("a forest", gsd=10, steps=3, seed=0).images[0]
    b = pipe("a forest", gsd=10, steps=3, seed=0).images[0]
    assert a.size == (pipe.tile, pipe.tile)
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(pipe("a forest", gsd=0.5, steps=3, seed=0).images[0]))
    assert not np.array_equal(pixels(a), pixels(pipe("a forest", gsd=10, steps=3, seed=1).images[0]))
    assert not np.array_equal(pixels(a), pixels(pipe("a river", gsd=10, steps=3, seed=0).images[0]))
    # image i of a call is the image of seed + i: the same noise and conditions, computed in a batch of two,
    # where the CPU kernels may sum in another order (a few pixels one level apart), against a different seed
    two = pipe(["a forest", "a river"], gsd=10, steps=3, seed=4).images
    diff = np.abs(pixels(two[1]).astype(int) - pixels(pipe("a river", gsd=10, steps=3, seed=5).images[0]).astype(int))
    other = np.abs(pixels(two[1]).astype(int) - pixels(pipe("a river", gsd=10, steps=3, seed=6).images[0]).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert other.mean() > 5


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler"])
def test_every_sampler_is_deterministic(pipe, sampler: str) -> None:  # type: ignore[no-untyped-def]
    a = pipe("farmland", gsd=2, steps=3, seed=3, sampler=sampler)
    b = pipe("farmland", gsd=2, steps=3, seed=3, sampler=sampler)
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert a.settings()["sampler"] == sampler and a.level == 16


def test_skipping_the_redundant_pass_changes_nothing(pipe) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(2, 48, 8, 8, generator=torch.Generator().manual_seed(0))
    text = pipe.conditioner.encode(["a forest", "a lake"])
    with torch.no_grad():
        two_pass = pipe.guided(x, 500, text, 14, 3.0, 3.0)
        # the same weights through the three-pass formula
        b = x.shape[0]
        null = pipe.conditioner.null()
        out = pipe.predict(torch.cat([x, x, x]), 500,
                           type(text).cat([type(text)(null.features.expand(b, -1, -1), null.mask.expand(b, -1)),
                                           text, text]),
                           torch.tensor([0, 0, 0, 0, 14, 14]))
        three_pass = combine_guidance(out[:b], out[b:2 * b], out[2 * b:], 3.0, 3.0)
    assert torch.allclose(two_pass, three_pass, atol=1e-4)


def test_larger_scenes_are_tiled_and_extend_keeps_the_tile(pipe) -> None:  # type: ignore[no-untyped-def]
    scene = pipe("a river", gsd=1, steps=2, seed=0, size=(72, 40)).images[0]
    assert scene.size == (72, 40)
    tile = pipe("a river", gsd=1, steps=2, seed=0).images[0]
    out = pipe.extend(tile, "a river", gsd=1, width=64, height=48, steps=2, seed=0).images[0]
    assert out.size == (64, 48)
    assert np.array_equal(pixels(out)[8:40, 16:48], pixels(tile))  # centred, unchanged
    corner = pipe.extend(tile, "a river", gsd=1, width=64, height=64, offset=(0, 32), steps=2).images[0]
    assert np.array_equal(pixels(corner)[32:64, 0:32], pixels(tile))
    with pytest.raises(ValueError, match="larger than the scene"):
        pipe.extend(scene, "a river", width=64, height=48, steps=2)
    with pytest.raises(ValueError, match="offset"):
        pipe.extend(tile, "a river", width=64, height=48, offset=(2, 0), steps=2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": ""}, "non-empty"),
    ({"prompt": ["ok", " "]}, "non-empty"),
    ({"steps": 0}, "steps"),
    ({"guidance": -1.0}, "guidance"),
    ({"size": 34}, "multiples of 4"),
    ({"size": 16}, "size must be"),
    ({"size": 4096}, "size must be"),
    ({"sampler": "plms"}, "unknown sampler"),
    ({"seed": -1}, "seed"),
    ({"gsd": -2.0}, "gsd"),
])
def test_bad_requests_name_the_problem(pipe, kwargs: dict, message: str) -> None:  # type: ignore[no-untyped-def]
    args = {"prompt": "a forest", "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(args.pop("prompt"), **args)


def test_folder_round_trip_and_checks(tiny, pipe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = pipe("a forest", gsd=10, steps=2, seed=0).images[0]
    again = load_model(str(tiny.folder), kind="diffusion", device="cpu")  # by folder through the factory
    assert np.array_equal(pixels(first), pixels(again("a forest", gsd=10, steps=2, seed=0).images[0]))
    assert json.loads((tiny.folder / GENERATOR_CONFIG).read_text())["format"] == "geovl_diffusion"
    # a corrupt UNet file is named
    copy = save_generator(pipe, tmp_path / "copy")
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="corrupt"):
        load_generator(copy, backbone=tiny.backbone)
    # a generator refuses a backbone it was not trained on
    other = make_tiny_generator(tmp_path, seed=1)
    from geovl.models import create_backbone

    stranger = create_backbone("geovl-micro", seed=5, device="cpu", precision="fp32")
    stranger.info.checkpoint_sha256 = "0" * 64
    with pytest.raises(ValueError, match="trained on backbone"):
        load_generator(other.folder, backbone=stranger)
    with pytest.raises(ValueError, match="not a geovl generator folder"):
        load_generator(tmp_path)
    with pytest.raises(KeyError, match="unknown generator"):
        load_generator("no-such-generator")
    with pytest.raises(ValueError, match="not a generator"):
        load_generator("geovl-rs-small")


def test_a_backbone_of_another_width_is_refused(tiny) -> None:  # type: ignore[no-untyped-def]
    pipe = tiny_pipeline(tiny.backbone)
    other = tiny_pipeline(tiny.backbone)
    other.unet.register_to_config(encoder_hid_dim=999)
    with pytest.raises(ValueError, match="text features"):
        other.attach_backbone(tiny.backbone)
    assert pipe.record()["kind"] == "diffusion"


def test_missing_bundled_generator_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from geovl.models import weights

    def missing(spec, *a, **k):  # type: ignore[no-untyped-def]
        raise CheckpointNotFoundError(f"{spec.name}: not found")

    monkeypatch.setattr(weights, "fetch_checkpoint", missing)
    monkeypatch.setattr("geovl.models.generator.fetch_checkpoint", missing)
    with pytest.raises(CheckpointNotFoundError, match="geovl-gen-small"):
        load_generator("geovl-gen-small")
