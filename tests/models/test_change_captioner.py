"""The change network and change-captioner folders: shapes, ablation switches, gated decoding, save / load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geovl.data.change_sentences import is_no_change_sentence
from geovl.models import create_backbone, load_model
from geovl.models.caption_decoder import DecoderConfig, TokenDecoder
from geovl.models.change_captioner import (
    CHANGE_CAPTIONER_CONFIG,
    NO_CHANGE_CAPTION,
    load_change_captioner,
)
from geovl.models.change_net import ChangeNet, ChangeNetConfig, semantic_histograms
from geovl.models.decoding import DecodingConfig
from tests.change_fixtures import make_tiny_change_captioner


def _config(**switches: object) -> ChangeNetConfig:
    decoder = DecoderConfig(vocab_size=12, feature_dim=16, embed_dim=8, patches=4, width=16, layers=1, heads=2,
                            dropout=0.0, gated=True)
    return ChangeNetConfig(decoder=decoder, grid=(2, 2), image_size=32, **switches)  # type: ignore[arg-type]


def _features(seed: int, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 5, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("switches", [{}, {"difference_attention": False}, {"verdict_token": False},
                                      {"semantic_classes": 3}, {"fusion_layers": 2}])
def test_change_net_shapes_for_every_ablation(switches: dict[str, object]) -> None:
    torch.manual_seed(0)
    net = ChangeNet(_config(**switches)).eval()
    semantic = torch.rand(3, 4, 6) if switches.get("semantic_classes") else None
    out = net(_features(0), _features(1), semantic)
    extra = 1 if semantic is not None else 0
    assert out.memory.shape == (3, 4 + 1 + (4 if extra else 0), 16)
    assert out.change_logit.shape == (3,) and out.mask_logits.shape == (3, 4)
    memory = net.with_verdict(out.memory, torch.tensor([True, False, True]))
    assert memory.shape[1] == out.memory.shape[1] + (0 if switches.get("verdict_token") is False else 1)
    logits = net.decoder.decode(memory, torch.ones(3, 5, dtype=torch.long))
    assert logits.shape == (3, 5, 12)


def test_identical_dates_give_identical_outputs_for_any_pair_order_of_rows() -> None:
    torch.manual_seed(0)
    net = ChangeNet(_config()).eval()
    a = _features(0)
    same = net(a, a)
    swapped = net(a.flip(0), a.flip(0))
    torch.testing.assert_close(same.change_logit.flip(0), swapped.change_logit)


def test_wrong_feature_shape_is_a_clear_error() -> None:
    net = ChangeNet(_config())
    with pytest.raises(ValueError, match="another image tower or input size"):
        net(torch.randn(2, 7, 16), torch.randn(2, 7, 16))


def test_grid_must_match_patches() -> None:
    decoder = DecoderConfig(vocab_size=12, feature_dim=16, embed_dim=8, patches=4)
    with pytest.raises(ValueError, match="grid"):
        ChangeNetConfig(decoder=decoder, grid=(3, 3))


def test_gated_decoder_starts_as_a_language_model() -> None:
    """Gates at 0: the memory has no effect until training opens them; without memory the blocks skip it."""
    torch.manual_seed(0)
    dec = TokenDecoder(DecoderConfig(vocab_size=10, feature_dim=8, embed_dim=8, patches=4, width=16, layers=2,
                                     heads=2, dropout=0.0, gated=True)).eval()
    tokens = torch.tensor([[1, 4, 5, 6]])
    text_only = dec.decode(None, tokens)
    torch.testing.assert_close(dec.decode(torch.randn(1, 6, 16), tokens), text_only)
    with torch.no_grad():
        for block in dec.layers:
            assert block.gate is not None
            block.gate.fill_(1.0)
    assert not torch.allclose(dec.decode(torch.randn(1, 6, 16), tokens), text_only)


def test_semantic_histograms_count_classes_per_cell() -> None:
    maps = torch.zeros(1, 4, 4, dtype=torch.long)
    maps[0, :2, :2] = 2
    maps[0, 3, 3] = 9  # outside the classes: ignored
    hist = semantic_histograms(maps, 3, (2, 2))
    assert hist.shape == (1, 4, 3)
    torch.testing.assert_close(hist[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(hist[0, 3], torch.tensor([0.75, 0.0, 0.0]))


def test_folder_round_trip_and_verdicts(tmp_path: Path) -> None:
    tiny = make_tiny_change_captioner(tmp_path, threshold=0.0)
    model = load_model(str(tiny.folder), kind="change-captioner")
    size = model.image_size
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 255, (2, 3, size, size), dtype=np.uint8))
    b = torch.from_numpy(rng.integers(0, 255, (2, 3, size, size), dtype=np.uint8))
    changed = model.describe_pixels(a, b, DecodingConfig(method="greedy"))
    assert all(r.changed and r.heatmap.shape == model.grid for r in changed)
    assert all(0.0 <= r.probability <= 1.0 for r in changed)
    assert all(not is_no_change_sentence(r.caption) for r in changed)
    unchanged = model.describe_pixels(a, b, DecodingConfig(method="greedy"), threshold=1.0)
    assert [r.caption for r in unchanged] == [NO_CHANGE_CAPTION] * 2
    assert [r.probability for r in unchanged] == [r.probability for r in changed]
    again = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    assert [r.caption for r in again.describe_pixels(a, b, DecodingConfig(method="greedy"))] == \
        [r.caption for r in changed]
    assert model.record()["kind"] == "change-captioner"


def test_semantic_maps_change_the_result_only_with_a_semantic_branch(tmp_path: Path) -> None:
    tiny = make_tiny_change_captioner(tmp_path, threshold=0.0, semantic_classes=3)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    size = model.image_size
    a = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    b = torch.full((1, 3, size, size), 200, dtype=torch.uint8)
    plain = model.describe_pixels(a, b, DecodingConfig(method="greedy"))[0]
    sem_a, sem_b = torch.zeros(1, size, size, dtype=torch.long), torch.full((1, size, size), 2, dtype=torch.long)
    with_maps = model.describe_pixels(a, b, DecodingConfig(method="greedy"), semantic_before=sem_a,
                                      semantic_after=sem_b)[0]
    assert with_maps.caption != plain.caption
    with pytest.raises(ValueError, match="both dates"):
        model.describe_pixels(a, b, DecodingConfig(), semantic_before=sem_a)


def test_bad_inputs_and_corrupt_folders(tmp_path: Path) -> None:
    tiny = make_tiny_change_captioner(tmp_path)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    size = model.image_size
    with pytest.raises(ValueError, match="threshold"):
        model.describe_pixels(torch.zeros(1, 3, size, size, dtype=torch.uint8),
                              torch.zeros(1, 3, size, size, dtype=torch.uint8), DecodingConfig(), threshold=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        model.describe_pixels(torch.zeros(1, 3, size, size, dtype=torch.uint8),
                              torch.zeros(2, 3, size, size, dtype=torch.uint8), DecodingConfig())
    other = create_backbone("geovl-micro", seed=5, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="trained on backbone"):
        load_change_captioner(tiny.folder, backbone=other)
    weights = tiny.folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(ValueError, match="corrupt"):
        load_change_captioner(tiny.folder, backbone=tiny.backbone)
    config = json.loads((tiny.folder / CHANGE_CAPTIONER_CONFIG).read_text())
    config["format"] = "something-else"
    (tiny.folder / CHANGE_CAPTIONER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format"):
        load_change_captioner(tiny.folder)
    with pytest.raises(KeyError, match="unknown change captioner"):
        load_change_captioner("no-such-change-model")
    with pytest.raises(ValueError, match="not a change captioner"):
        load_change_captioner("geovl-caption-small")
