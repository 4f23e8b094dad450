"""Caption decoding: greedy, beam search, nucleus sampling, the repetition guard and the length limits."""

from __future__ import annotations

import math

import pytest
import torch

from geovl.models.decoding import DecodingConfig, generate

BOS, EOS, V = 1, 2, 8


def table_step(table: dict[tuple[int, ...], list[float]]):
    """A step function whose next-token log-probabilities depend on the generated prefix (default: uniform-ish)."""

    def step(tokens: torch.Tensor, rows: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        out = []
        for seq in tokens.tolist():
            probs = table.get(tuple(seq[1:]), [0.01] * 2 + [0.5] + [0.49 / (V - 3)] * (V - 3))
            out.append([math.log(max(p, 1e-9)) for p in probs])
        return torch.tensor(out)

    return step


def probs(best: dict[int, float]) -> list[float]:
    rest = (1 - sum(best.values())) / (V - len(best))
    return [best.get(i, rest) for i in range(V)]


# Greedy takes 3 (0.5) then is stuck with low-probability continuations; beam search finds 4 -> 5 -> end,
# whose total probability (0.45 * 0.9 * 0.9) beats 3's best path (0.5 * 0.4 * ...).
TABLE = {
    (): probs({3: 0.5, 4: 0.45}),
    (3,): probs({6: 0.4, 7: 0.35}),
    (3, 6): probs({EOS: 0.3, 7: 0.3}),
    (4,): probs({5: 0.9}),
    (4, 5): probs({EOS: 0.9}),
}


def run(cfg: DecodingConfig, batch: int = 1, table: dict | None = None) -> list[list[int]]:
    return generate(table_step(table or TABLE), batch, bos=BOS, eos=EOS, config=cfg, device=torch.device("cpu"),
                    special=[0])


def test_greedy_takes_the_locally_best_token() -> None:
    out = run(DecodingConfig(method="greedy", min_length=0, no_repeat_ngram_size=0, max_length=6))
    assert out[0][:2] == [3, 6]


def test_beam_search_finds_the_better_sequence() -> None:
    out = run(DecodingConfig(method="beam", beam_size=3, length_penalty=0.0, min_length=0, no_repeat_ngram_size=0))
    assert out == [[4, 5]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_equals_greedy(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(V, V, generator=gen) * 3

    def step(tokens: torch.Tensor, rows: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        return weights[tokens[:, -1]] + rows[:, None].float() * 0.3

    common = {"min_length": 2, "max_length": 12, "no_repeat_ngram_size": 2}
    greedy = generate(step, 4, bos=BOS, eos=EOS, config=DecodingConfig(method="greedy", **common),
                      device=torch.device("cpu"))
    beam1 = generate(step, 4, bos=BOS, eos=EOS, config=DecodingConfig(method="beam", beam_size=1, **common),
                     device=torch.device("cpu"))
    assert greedy == beam1


def test_nucleus_sampling_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    def sample(seed: int) -> list[list[int]]:
        return run(DecodingConfig(method="nucleus", top_p=0.95, temperature=1.5, seed=seed, min_length=0,
                                  no_repeat_ngram_size=0), batch=16)

    assert sample(3) == sample(3)
    assert any(sample(s) != sample(3) for s in (4, 5, 6))


def test_no_repeat_ngram_blocks_repeated_phrases() -> None:
    def step(tokens: torch.Tensor, rows: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        logits = torch.full((tokens.shape[0], V), -5.0)
        logits[:, 3 + tokens.shape[1] % 2] = 5.0  # alternates 3, 4, 3, 4 ... forever
        return logits

    free = generate(step, 1, bos=BOS, eos=EOS, config=DecodingConfig(method="greedy", no_repeat_ngram_size=0,
                                                                     max_length=8), device=torch.device("cpu"))
    guarded = generate(step, 1, bos=BOS, eos=EOS, config=DecodingConfig(method="greedy", no_repeat_ngram_size=2,
                                                                        max_length=8), device=torch.device("cpu"))
    assert free[0] == [4, 3, 4, 3, 4, 3, 4, 3]
    bigrams = list(zip(guarded[0], guarded[0][1:], strict=False))
    assert len(bigrams) == len(set(bigrams))


def test_min_and_max_length() -> None:
    short = {(): probs({EOS: 0.9})}
    assert run(DecodingConfig(method="greedy", min_length=0), table=short) == [[]]
    out = run(DecodingConfig(method="greedy", min_length=2, no_repeat_ngram_size=0), table=short)
    assert len(out[0]) >= 2
    capped = run(DecodingConfig(method="beam", beam_size=2, max_length=3, min_length=3, no_repeat_ngram_size=0),
                 table=short)
    assert len(capped[0]) == 3


def test_special_tokens_are_never_generated() -> None:
    def step(tokens: torch.Tensor, rows: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        logits = torch.zeros(tokens.shape[0], V)
        logits[:, 0] = 10.0
        return logits

    out = generate(step, 2, bos=BOS, eos=EOS, config=DecodingConfig(method="beam", beam_size=2, max_length=5),
                   device=torch.device("cpu"), special=[0])
    assert all(0 not in seq for seq in out)


@pytest.mark.parametrize("bad", [{"method": "topk"}, {"beam_size": 0}, {"top_p": 0.0}, {"temperature": 0.0},
                                 {"max_length": 0}, {"min_length": 50}, {"repetition_penalty": 0.5},
                                 {"beam_size": 2.5}, {"seed": True}, {"top_p": "0.9"}])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        DecodingConfig(**bad)


def test_to_dict_keeps_what_the_method_uses() -> None:
    assert "beam_size" in DecodingConfig(method="beam").to_dict()
    assert "top_p" not in DecodingConfig(method="beam").to_dict()
    nucleus = DecodingConfig(method="nucleus", seed=7).to_dict()
    assert nucleus["seed"] == 7 and "beam_size" not in nucleus
    assert DecodingConfig.from_dict(DecodingConfig(method="greedy").to_dict()).method == "greedy"
    with pytest.raises(ValueError, match="unknown decoding option"):
        DecodingConfig.from_dict({"beams": 3})
