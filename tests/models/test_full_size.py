"""The checkpoint formats with the real architectures (hundreds of MB of random weights): `pytest -m slow`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geovl.models import get_checkpoint, load_backbone
from geovl.models.weights import checkpoint_dir
from tests import model_fixtures as fx

pytestmark = pytest.mark.slow


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", ["remoteclip-rn50", "remoteclip-vit-b-32", "georsclip-vit-b-32", "skyclip-vit-b-32"])
def test_real_architecture_checkpoints_load_exactly(name: str, hub_cache: Path) -> None:
    spec = get_checkpoint(name)
    model = fx.make_openclip(spec.architecture, seed=0, quick_gelu=spec.quick_gelu)
    if spec.format == "openclip_train":
        target = checkpoint_dir() / spec.source.filename  # type: ignore[union-attr]
        target.parent.mkdir(parents=True, exist_ok=True)
        fx.write_openclip_train_zip(model, target)
    else:
        fx.write_state_dict(model, fx.hub_cache_file(hub_cache, spec.source.repo_id, spec.source.filename))  # type: ignore[union-attr]
    # the weights as written (optimize=False: no BatchNorm folding, which changes RN50 outputs by float rounding)
    backbone = load_backbone(name, device="cpu", precision="fp32", optimize=False)
    pixels = torch.randn(2, 3, spec.preprocess.image_size, spec.preprocess.image_size)
    tokens = backbone.tokenize(["a satellite image of a stadium", "farmland"])
    with torch.no_grad():
        assert torch.equal(backbone.towers.encode_image(pixels), model.encode_image(pixels))
        torch.testing.assert_close(backbone.towers.encode_text(tokens), model.encode_text(tokens), rtol=0, atol=1e-5)
