"""Write tiny randomly initialised models in the real checkpoint formats, where geovl's loaders look for them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from geovl.models.factory import build_openclip_model
from geovl.models.registry import architecture_config

#: Stand-ins of the same family: the loading path does not depend on width or depth.
MICRO_ARCH = {"RN50": "geovl-micro-rn"}
DEFAULT_MICRO = "geovl-micro"


def micro_arch(arch: str) -> str:
    return MICRO_ARCH.get(arch, DEFAULT_MICRO)


def make_openclip(arch: str, seed: int, quick_gelu: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return build_openclip_model(architecture_config(arch), quick_gelu).eval()


def hub_cache_file(cache: Path, repo_id: str, filename: str, revision: str = "0" * 40) -> Path:
    """The path ``hf_hub_download`` would have written ``filename`` to, with the ref file that points at it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    path = repo / "snapshots" / revision / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_state_dict(model: nn.Module, path: Path) -> None:
    """RemoteCLIP / GeoRSCLIP: ``torch.save(model.state_dict())``."""
    torch.save(model.state_dict(), path)


def write_openclip_train_zip(model: nn.Module, path: Path, inner: str = "SkyCLIP_ViT_B32_top50pct/epoch_20.pt") -> None:
    """SkyCLIP: a zip holding an open_clip training checkpoint whose keys carry DDP's ``module.`` prefix."""
    ckpt = {
        "epoch": 20,
        "name": "skyclip-test",
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-9, "weight_decay": 1.0, "params": [0, 1]}]},
    }
    tmp = path.with_suffix(".inner.pt")
    torch.save(ckpt, tmp)
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(tmp, inner)
        zf.writestr("SkyCLIP_ViT_B32_top50pct/epoch_10.pt", b"older epoch, must not be picked")
    tmp.unlink()


def write_siglip_folder(folder: Path, seed: int) -> nn.Module:
    """Git-RSCLIP: a transformers ``save_pretrained`` SigLIP folder with a fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    words = ["<pad>", "</s>", "<unk>", "a", "an", "satellite", "image", "of", "river", "forest", "many", "buildings",
             "road", "airport", "farmland", "beach", "the", "with"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    config = SiglipConfig(
        text_config={"vocab_size": len(words), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0, "eos_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32, "width": 32}}))
    return model
