"""BLIP captioning through transformers, on a tiny random BLIP model written in the real folder format."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geovl.models import load_model
from geovl.models.blip import BlipCaptioner, is_blip_folder, load_blip
from geovl.models.captioner import load_captioner
from geovl.models.decoding import DecodingConfig
from geovl.models.record import weights_digest
from geovl.models.weights import CheckpointNotFoundError, checkpoint_dir

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "an", "the", "of", "many", "buildings", "river",
         "field", "green", "road", "with", "and", "some", "trees", "near", "is", "are", "in", "there", "large",
         "small", "white", "houses", "farmland", "parking", "lot", "cars", "beach", "sea", "bridge"]
SIZE = 32
HUB_ID = "Salesforce/blip-image-captioning-base"


def write_tiny_blip(folder: Path) -> Path:
    """A random BLIP captioner (hidden 32, 2 layers, 32x32 images) saved as transformers saves the real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer.from_pretrained(str(folder), bos_token="[DEC]")
    # a wide initialisation, so that captions depend on the pixels (BLIP's default leaves the image all but unused)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "initializer_range": 0.2}
    config = transformers.BlipConfig(
        vision_config={**small, "image_size": SIZE, "patch_size": 8},
        text_config={**small, "vocab_size": len(WORDS), "encoder_hidden_size": 32, "max_position_embeddings": 64,
                     "bos_token_id": WORDS.index("[DEC]"), "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3},
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = transformers.BlipForConditionalGeneration(config).eval()
    processor = transformers.BlipProcessor(transformers.BlipImageProcessor(size={"height": SIZE, "width": SIZE}),
                                           tokenizer)
    processor.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return folder


def image(seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(scope="module")
def captioner(blip_folder: Path) -> BlipCaptioner:
    return load_blip(blip_folder, device="cpu")


@pytest.fixture(scope="module")
def pixels(captioner: BlipCaptioner) -> torch.Tensor:
    return torch.stack([captioner.uint8_transform(image(i)) for i in range(3)])


@pytest.fixture
def offline_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, with an empty Hugging Face cache and an empty geovl checkpoint folder."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GEOVL_OFFLINE", "1")
    monkeypatch.setenv("GEOVL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def test_folder_loads_by_path_as_a_captioner(blip_folder: Path) -> None:
    assert is_blip_folder(blip_folder)
    loaded = load_model(blip_folder, kind="captioner", device="cpu")
    assert isinstance(loaded, BlipCaptioner)
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert loaded.name == str(blip_folder)
    # the processor's settings: 32x32 squash (no crop), bicubic, CLIP mean/std, 1/255
    assert loaded.preprocess.image_size == SIZE and loaded.preprocess.resize_mode == "squash"
    assert loaded.preprocess.interpolation == "bicubic"
    assert loaded.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    out = loaded.uint8_transform(image(0, (50, 80)))
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, SIZE, SIZE)


def test_is_blip_folder_rejects_other_folders(tmp_path: Path) -> None:
    assert not is_blip_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not is_blip_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip", "architectures": ["SiglipModel"]}))
    assert not is_blip_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BlipForConditionalGeneration"]}))
    assert is_blip_folder(tmp_path)
    assert not is_blip_folder(tmp_path / "config.json")


def test_pixels_match_the_blip_processor(captioner: BlipCaptioner, blip_folder: Path) -> None:
    processor = transformers.BlipProcessor.from_pretrained(str(blip_folder), local_files_only=True)
    img = image(1)  # already 32x32: no resize, so both paths see the same pixels
    expected = processor(images=img, return_tensors="pt")["pixel_values"]
    got = captioner.pixel_values(captioner.uint8_transform(img)[None])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_greedy_captions_match_transformers(captioner: BlipCaptioner, blip_folder: Path,
                                            pixels: torch.Tensor) -> None:
    greedy = DecodingConfig(method="greedy", max_length=8, min_length=2, no_repeat_ngram_size=0)
    captions = captioner.caption_pixels(pixels, greedy)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert all(c == c.strip() and c[:1] == c[:1].upper() for c in captions)
    # the reference: transformers' own processor + generate + decode
    processor = transformers.BlipProcessor.from_pretrained(str(blip_folder), local_files_only=True)
    inputs = processor(images=[image(i) for i in range(3)], return_tensors="pt")
    ids = captioner.model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=8, min_new_tokens=2)
    expected = [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert [c.lower() for c in captions] == [e.lower() for e in expected]
    assert len(set(captions)) > 1  # the images matter


def test_beam_of_one_is_greedy_and_beams_caption(captioner: BlipCaptioner, pixels: torch.Tensor) -> None:
    common = {"max_length": 10, "min_length": 3}
    greedy = captioner.caption_pixels(pixels, DecodingConfig(method="greedy", **common))
    assert captioner.caption_pixels(pixels, DecodingConfig(method="beam", beam_size=1, **common)) == greedy
    beams = captioner.caption_pixels(pixels, DecodingConfig(method="beam", beam_size=3, **common))
    assert len(beams) == 3 and all(isinstance(c, str) for c in beams)
    assert captioner.caption_pixels(pixels[:0], DecodingConfig()) == []


def test_nucleus_is_reproducible_by_seed(captioner: BlipCaptioner, pixels: torch.Tensor) -> None:
    nucleus = DecodingConfig(method="nucleus", top_p=0.95, temperature=1.5, seed=7, max_length=10, min_length=3)
    state = torch.get_rng_state()
    first = captioner.caption_pixels(pixels, nucleus)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    torch.manual_seed(123)  # the global state does not matter either
    assert captioner.caption_pixels(pixels, nucleus) == first
    assert len(first) == 3


def test_decoding_maps_to_generate_options(captioner: BlipCaptioner) -> None:
    greedy = captioner.generate_kwargs(DecodingConfig(method="greedy", max_length=12, min_length=4,
                                                      no_repeat_ngram_size=2, repetition_penalty=1.3))
    assert greedy == {"max_new_tokens": 12, "min_new_tokens": 4, "no_repeat_ngram_size": 2,
                      "repetition_penalty": 1.3, "num_beams": 1, "do_sample": False}
    beam = captioner.generate_kwargs(DecodingConfig(method="beam", beam_size=4, length_penalty=0.5))
    assert beam["num_beams"] == 4 and beam["length_penalty"] == 0.5 and beam["early_stopping"] is True
    assert not beam["do_sample"]
    nucleus = captioner.generate_kwargs(DecodingConfig(method="nucleus", top_p=0.8, temperature=0.7))
    assert nucleus["do_sample"] and nucleus["top_p"] == 0.8 and nucleus["temperature"] == 0.7
    assert nucleus["top_k"] == 0 and nucleus["num_beams"] == 1
    # capped by the text model's 64 positions
    assert captioner.generate_kwargs(DecodingConfig(max_length=500))["max_new_tokens"] == 63


def test_min_and_max_length_bound_the_generated_tokens(captioner: BlipCaptioner, pixels: torch.Tensor,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.Tensor] = []
    generate = captioner.model.generate

    def spy(**kwargs: object) -> torch.Tensor:
        out = generate(**kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(captioner.model, "generate", spy)
    captioner.caption_pixels(pixels, DecodingConfig(method="greedy", max_length=5, min_length=5))
    assert calls and calls[0].shape == (3, 1 + 5)  # the start token + exactly 5 generated


def test_prompt_is_continued(blip_folder: Path, pixels: torch.Tensor) -> None:
    prompted = load_blip(blip_folder, device="cpu", prompt="many buildings near")
    captions = prompted.caption_pixels(pixels, DecodingConfig(method="greedy", max_length=4, min_length=1))
    assert all(c.startswith("Many buildings near") for c in captions)


def test_bad_pixels_are_refused(captioner: BlipCaptioner, pixels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="uint8"):
        captioner.caption_pixels(pixels.float(), DecodingConfig())
    with pytest.raises(ValueError, match="32x32"):
        captioner.caption_pixels(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), DecodingConfig())


def test_record_names_the_weights(captioner: BlipCaptioner, blip_folder: Path) -> None:
    record = captioner.record()
    assert record["kind"] == "captioner" and record["family"] == "BLIP"
    assert record["name"] == str(blip_folder) and record["checkpoint"] == str(blip_folder)
    assert re.fullmatch(r"[0-9a-f]{64}", record["checkpoint_sha256"])
    assert record["checkpoint_sha256"] == weights_digest(blip_folder)
    json.dumps(record)


def test_uncached_hub_id_offline_says_where_to_put_it(offline_empty_cache: None) -> None:
    with pytest.raises(CheckpointNotFoundError) as err:
        load_captioner(HUB_ID, device="cpu")
    message = str(err.value)
    assert HUB_ID in message and "offline" in message
    assert str(checkpoint_dir() / "Salesforce--blip-image-captioning-base") in message


@pytest.mark.parametrize("name", ["blip-base", "blip-large"])
def test_registry_rows_offline_raise_checkpoint_not_found(name: str, offline_empty_cache: None) -> None:
    with pytest.raises(CheckpointNotFoundError, match="Salesforce--blip-image-captioning"):
        load_model(name)


def test_hub_id_placed_in_the_checkpoint_folder_loads(offline_empty_cache: None, blip_folder: Path) -> None:
    shutil.copytree(blip_folder, checkpoint_dir() / HUB_ID.replace("/", "--"))
    loaded = load_captioner(HUB_ID, device="cpu")
    assert isinstance(loaded, BlipCaptioner) and loaded.name == HUB_ID
    assert loaded.record()["checkpoint_sha256"] == weights_digest(blip_folder)


def test_folder_without_weights_is_refused(tmp_path: Path, blip_folder: Path) -> None:
    broken = tmp_path / "no-weights"
    shutil.copytree(blip_folder, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing weights \(model\.safetensors"):
        load_captioner(broken, device="cpu")
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(blip_folder / "config.json", only_config / "config.json")
    with pytest.raises(ValueError, match=r"weights.*tokenizer.*image processor"):
        load_captioner(only_config, device="cpu")


def test_other_blip_models_and_partial_weights_are_refused(tmp_path: Path, blip_folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    vqa = tmp_path / "vqa"
    shutil.copytree(blip_folder, vqa)
    config = json.loads((vqa / "config.json").read_text())
    config["architectures"] = ["BlipForQuestionAnswering"]
    (vqa / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not a BLIP captioning model"):
        load_blip(vqa, device="cpu")
    partial = tmp_path / "partial"
    shutil.copytree(blip_folder, partial)
    state = load_file(str(partial / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "text_decoder.bert.encoder" not in k},
              str(partial / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="do not cover"):
        load_blip(partial, device="cpu")


def test_cpu_runs_in_fp32(blip_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="geovl.models.blip"):
        assert load_blip(blip_folder, device="cpu", precision="bf16").dtype == torch.float32
    assert "fp32" in caplog.text
    with pytest.raises(ValueError, match="unknown precision"):
        load_blip(blip_folder, device="cpu", precision="int4")
