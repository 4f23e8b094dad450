"""Text batches are embedded without their trailing padding when (and only when) that leaves the embeddings as
they are: short search queries then cost a fraction of a context-length pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geovl.models import load_backbone

TEXTS = ["a river", "a dense residential area next to a highway and a large parking lot", "forest"]


@pytest.mark.parametrize("model", ["random:geovl-micro", "random:geovl-effnet-lite0-minilm"])
def test_trimmed_batches_give_the_same_embeddings(model: str) -> None:
    trimmed = load_backbone(model, device="cpu", precision="fp32")
    full = load_backbone(model, device="cpu", precision="fp32")
    full._trim_ok = False
    seen: list[int] = []
    embed = trimmed.embed_tokens
    trimmed.embed_tokens = lambda tokens, normalize=True: (seen.append(tokens.shape[1]), embed(tokens, normalize))[1]
    first = trimmed.encode_texts(TEXTS[:1])  # checks once that trimming changes nothing
    assert trimmed._trim_ok is True
    a, b = trimmed.encode_texts(TEXTS), full.encode_texts(TEXTS)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(first, full.encode_texts(TEXTS[:1]), atol=1e-5)
    context = trimmed.tokenize(TEXTS).shape[1]
    assert seen[-1] < context  # the last batch really ran trimmed
    assert seen[-1] == int((trimmed.tokenize(TEXTS) != 0).any(0).nonzero().max()) + 2


def test_towers_that_pool_the_last_position_are_not_trimmed() -> None:
    """A tower whose output depends on the padded length (SigLIP pools the last position) keeps full batches."""
    backbone = load_backbone("random:geovl-micro", device="cpu", precision="fp32")
    embed = backbone.embed_tokens

    def last_position(tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        out = embed(tokens, normalize)
        return out + 0.5 * torch.sin(torch.tensor(float(tokens.shape[1])))  # stands in for last-token pooling

    backbone.embed_tokens = last_position  # type: ignore[method-assign]
    full = [last_position(backbone.tokenize([t])).numpy() for t in TEXTS]
    got = [backbone.encode_texts([t]) for t in TEXTS]
    assert backbone._trim_ok is False
    for g, f in zip(got, full, strict=True):
        np.testing.assert_allclose(g, f, atol=1e-6)
