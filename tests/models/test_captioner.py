"""geovl's captioner: vocabulary, the cached decoder, folders (save / load / refusals) and the loader registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geovl.models import create_backbone, load_model
from geovl.models.caption_decoder import CaptionDecoder, DecoderConfig, pack_image_features
from geovl.models.caption_vocab import BOS, EOS, UNK, WordVocab, caption_words, format_caption
from geovl.models.captioner import CAPTIONER_CONFIG, BackboneCaptioner, load_captioner
from geovl.models.decoding import DecodingConfig
from geovl.models.weights import CheckpointNotFoundError
from tests.caption_fixtures import make_tiny_captioner


def pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def test_vocab_is_deterministic_and_round_trips() -> None:
    caps = ["Many buildings, and two roads.", "many trees", "two roads and a river 3"]
    vocab = WordVocab.build(caps, min_count=2)
    assert vocab.words[4:] == ("and", "many", "roads", "two")  # by frequency, then alphabetically
    ids = vocab.encode("Two roads and an airport", max_length=10)
    assert ids[0] == BOS and ids[-1] == EOS and UNK in ids
    assert vocab.decode(ids[1:-1]) == "Two roads and."  # <unk> is dropped
    assert caption_words("A 3-lane road.") == ["a", "3", "lane", "road"]
    assert format_caption([]) == ""
    assert vocab.encode_batch(["two", "two roads and many"], 4).tolist() == [[BOS, 7, EOS, 0], [BOS, 7, 6, EOS]]
    with pytest.raises(ValueError, match="no word occurs"):
        WordVocab.build(["one"], min_count=2)


def test_cached_decoding_steps_equal_the_full_forward() -> None:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=20, feature_dim=12, embed_dim=8, patches=4, width=16, layers=2, heads=2,
                        dropout=0.0, max_length=10)
    decoder = CaptionDecoder(cfg).eval()
    feats = pack_image_features(torch.randn(3, 4, 12), torch.randn(3, 8))
    tokens = torch.randint(4, 20, (3, 7))
    full = decoder(feats, tokens)
    state = decoder.start(feats, torch.arange(3))
    for t in range(1, 8):
        step = decoder.step(state, tokens[:, :t])
        torch.testing.assert_close(step, full[:, t - 1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="packed image features"):
        decoder(torch.randn(3, 6, 12), tokens)


def test_saved_captioner_loads_by_path_and_captions_deterministically(tmp_path: Path) -> None:
    tiny = make_tiny_captioner(tmp_path)
    shared = load_model(tiny.folder, kind="captioner", backbone=tiny.backbone)
    alone = load_captioner(tiny.folder, device="cpu", precision="fp32")
    assert isinstance(shared, BackboneCaptioner) and shared.backbone is tiny.backbone
    batch = pixels(4, tiny.backbone.image_size)
    cfg = DecodingConfig(method="beam", beam_size=3)
    first = shared.caption_pixels(batch, cfg)
    assert first == alone.caption_pixels(batch, cfg)
    assert len(first) == 4 and all(isinstance(c, str) and c for c in first)
    assert len(set(first)) > 1  # the image, not the prefix alone, picks the words
    greedy = shared.caption_pixels(batch, DecodingConfig(method="greedy"))
    assert greedy == shared.caption_pixels(batch, DecodingConfig(method="beam", beam_size=1))
    record = shared.record()
    assert record["checkpoint_sha256"] and record["backbone"]["checkpoint_sha256"]


def test_a_captioner_refuses_another_backbone_and_corrupt_weights(tmp_path: Path) -> None:
    tiny = make_tiny_captioner(tmp_path)
    other = create_backbone("geovl-micro", seed=1, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="trained on backbone"):
        load_captioner(tiny.folder, backbone=other)
    weights = tiny.folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="corrupt"):
        load_captioner(tiny.folder, backbone=tiny.backbone)


def test_folder_problems_are_named(tmp_path: Path) -> None:
    tiny = make_tiny_captioner(tmp_path)
    config = json.loads((tiny.folder / CAPTIONER_CONFIG).read_text())
    config["format"] = "something-else"
    (tiny.folder / CAPTIONER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="expected 'geovl-captioner'"):
        load_captioner(tiny.folder, backbone=tiny.backbone)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a geovl captioner folder"):
        load_captioner(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a dual-encoder, not a captioner"):
        load_model("geovl-rs-small", kind="captioner")
    with pytest.raises(KeyError, match=r"unknown captioner 'nope'\. Known: geovl-caption-small, blip-base"):
        load_captioner("nope")


def test_registry_captioners_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GEOVL_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="blip-image-captioning-large"):
        load_model("blip-large")


def test_the_frozen_backbone_stays_in_eval_mode(tmp_path: Path) -> None:
    from geovl.models.captioner import PackedImageFeatures

    tiny = make_tiny_captioner(tmp_path)
    features = PackedImageFeatures(tiny.backbone)
    features.train()
    assert not features.training and not tiny.backbone.model.training
