"""Caption decoding for autoregressive captioners: greedy, beam search and nucleus sampling, batched.

The decoders call ``step(tokens, rows, parents) -> logits``: ``tokens`` is the (R, t) prefix of R running
sequences (each starting with the start token), ``rows`` (R,) says which input image each sequence belongs to (the
same on every call), so a model conditions every beam of an image on that image's features without copying them,
and ``parents`` (R,) says which sequence of the previous call each one extends (``None`` on the first call), so a
model that caches attention keys and values reorders its cache and runs only the newest token. It returns the
(R, V) next-token logits.

Rules:

* **greedy**: the most likely token each step; **beam** (``beam_size`` >= 1): the ``beam_size`` best prefixes by
  summed log-probability, a hypothesis that emits the end token is scored ``sum_logp / length ** length_penalty``
  (``length`` counts the generated tokens, the end token included), and an image is done once it has
  ``beam_size`` finished hypotheses (early stopping), so ``beam_size=1`` is exactly greedy; **nucleus**: sample
  from the smallest set of tokens whose probability reaches ``top_p`` (after ``temperature``), from a
  ``torch.Generator`` seeded by ``seed``, so a seed always gives the same captions on the same device.
* **repetition guard** (remote-sensing captions repeat phrases: "many buildings and many buildings"):
  ``no_repeat_ngram_size = n`` forbids any n-gram a sequence already contains; ``repetition_penalty = p > 1``
  divides the positive logits (multiplies the negative ones) of tokens already generated, as in CTRL.
* ``min_length`` forbids the end token before that many generated tokens; ``max_length`` caps them (a sequence cut
  there is returned as it is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

__all__ = ["DECODING_METHODS", "DecodingConfig", "StepFn", "generate"]

DECODING_METHODS = ("greedy", "beam", "nucleus")

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class DecodingConfig:
    """How captions are decoded (see the module docstring for the rules).

    Attributes:
        method: ``"greedy"``, ``"beam"`` or ``"nucleus"``.
        beam_size: beams per image (``beam``).
        length_penalty: exponent of the length normalisation of finished beams (0: none; > 0 favours longer).
        top_p: nucleus mass (``nucleus``).
        temperature: softmax temperature (``nucleus``).
        max_length: most tokens generated per caption.
        min_length: fewest tokens before the end token is allowed.
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0: off).
        repetition_penalty: CTRL penalty on tokens already generated (1.0: off).
        seed: sampling seed (``nucleus``).
    """

    method: Literal["greedy", "beam", "nucleus"] = "beam"
    beam_size: int = 3
    length_penalty: float = 1.0
    top_p: float = 0.9
    temperature: float = 1.0
    max_length: int = 30
    min_length: int = 3
    no_repeat_ngram_size: int = 3
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("beam_size", "max_length", "min_length", "no_repeat_ngram_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("length_penalty", "top_p", "temperature", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        checks = [
            (self.method in DECODING_METHODS, f"decoding method must be one of {', '.join(DECODING_METHODS)}, "
                                              f"got {self.method!r}"),
            (1 <= self.beam_size <= 32, f"beam_size must be in 1..32, got {self.beam_size}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (1 <= self.max_length <= 512, f"max_length must be in 1..512, got {self.max_length}"),
            (0 <= self.min_length <= self.max_length,
             f"min_length must be in 0..max_length={self.max_length}, got {self.min_length}"),
            (self.no_repeat_ngram_size >= 0, f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}"),
            (self.repetition_penalty >= 1.0, f"repetition_penalty must be >= 1.0, got {self.repetition_penalty}"),
            (math.isfinite(self.length_penalty), f"length_penalty must be finite, got {self.length_penalty}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        """The settings that matter for ``method`` (what a caption record stores)."""
        data = asdict(self)
        if self.method != "beam":
            data.pop("beam_size")
            data.pop("length_penalty")
        if self.method != "nucleus":
            for key in ("top_p", "temperature", "seed"):
                data.pop(key)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodingConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown decoding option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


# ---------------------------------------------------------------- logit processing


def _banned_ngrams(seqs: list[list[int]], n: int) -> list[set[int]]:
    """For each sequence, the tokens that would complete an n-gram it already contains."""
    out: list[set[int]] = []
    for seq in seqs:
        banned: set[int] = set()
        if n > 0 and len(seq) >= n:
            prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            for i in range(len(seq) - n + 1):
                if tuple(seq[i:i + n - 1]) == prefix:
                    banned.add(seq[i + n - 1])
        out.append(banned)
    return out


def _process(logits: torch.Tensor, generated: torch.Tensor, cfg: DecodingConfig, eos: int,
             special: list[int]) -> torch.Tensor:
    """Apply the repetition guard and the length limits to (R, V) float32 logits; ``generated`` is (R, t)."""
    logits = logits.float().clone()
    for token in special:
        logits[:, token] = -math.inf
    if generated.shape[1] < cfg.min_length:
        logits[:, eos] = -math.inf
    if generated.shape[1] and cfg.repetition_penalty > 1.0:
        seen = torch.gather(logits, 1, generated)
        seen = torch.where(seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty)
        logits.scatter_(1, generated, seen)
    if cfg.no_repeat_ngram_size and generated.shape[1] >= cfg.no_repeat_ngram_size:
        for row, banned in enumerate(_banned_ngrams(generated.tolist(), cfg.no_repeat_ngram_size)):
            if banned:
                logits[row, list(banned)] = -math.inf
    return logits


# ---------------------------------------------------------------- decoders


def generate(step: StepFn, batch: int, *, bos: int, eos: int, config: DecodingConfig, device: torch.device,
             special: list[int] | None = None) -> list[list[int]]:
    """Decode ``batch`` sequences; returns each one's generated token ids (without the start and end tokens).

    ``special`` lists token ids that are never generated (padding, unknown word, the start token).
    """
    if batch < 1:
        return []
    banned = list(special or [])
    with torch.no_grad():
        if config.method == "beam" and config.beam_size > 1:
            return _beam(step, batch, bos, eos, config, device, banned)
        return _sequential(step, batch, bos, eos, config, device, banned)


def _sequential(step: StepFn, batch: int, bos: int, eos: int, cfg: DecodingConfig, device: torch.device,
                special: list[int]) -> list[list[int]]:
    """Greedy (also ``beam`` with one beam) or nucleus sampling, one token per step for every running row."""
    rows = torch.arange(batch, device=device)
    tokens = torch.full((batch, 1), bos, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    parents: torch.Tensor | None = None
    for _ in range(cfg.max_length):
        logits = _process(step(tokens, rows, parents), tokens[:, 1:], cfg, eos, special)
        parents = rows
        if cfg.method == "nucleus":
            nxt = _sample_top_p(logits / cfg.temperature, cfg.top_p, gen)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == eos
        if bool(done.all()):
            break
    out = []
    for seq in tokens[:, 1:].tolist():
        out.append(seq[: seq.index(eos)] if eos in seq else seq)
    return out


def _sample_top_p(logits: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_p.cumsum(dim=-1)
    keep = cumulative - sorted_p < top_p  # the smallest prefix reaching top_p (the top token is always kept)
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    choice = torch.multinomial(sorted_p / sorted_p.sum(dim=-1, keepdim=True), 1, generator=gen)
    return order.gather(1, choice).squeeze(1)


@dataclass
class _Hypotheses:
    """Finished beams of one image: ``(score, tokens)``, best first, at most ``size``."""

    size: int
    items: list[tuple[float, list[int]]]

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda item: -item[0])
        del self.items[self.size:]

    @property
    def full(self) -> bool:
        return len(self.items) >= self.size


def _beam(step: StepFn, batch: int, bos: int, eos: int, cfg: DecodingConfig, device: torch.device,
          special: list[int]) -> list[list[int]]:
    k = cfg.beam_size
    rows = torch.arange(batch, device=device).repeat_interleave(k)
    tokens = torch.full((batch * k, 1), bos, dtype=torch.long, device=device)
    scores = torch.full((batch, k), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one so the first step does not pick k copies
    finished = [_Hypotheses(k, []) for _ in range(batch)]
    parents: torch.Tensor | None = None
    for t in range(1, cfg.max_length + 1):
        logp = torch.log_softmax(_process(step(tokens, rows, parents), tokens[:, 1:], cfg, eos, special), dim=-1)
        vocab = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(batch, k * vocab)
        top_scores, top_ids = cand.topk(min(2 * k, k * vocab), dim=1)
        next_rows: list[int] = []
        next_tokens: list[int] = []
        next_scores: list[float] = []
        for b in range(batch):
            kept = 0
            for score, flat in zip(top_scores[b].tolist(), top_ids[b].tolist(), strict=True):
                beam, token = divmod(flat, vocab)
                if kept == k or finished[b].full or score == -math.inf:
                    break
                if token == eos or t == cfg.max_length:
                    seq = tokens[b * k + beam, 1:].tolist() + ([] if token == eos else [token])
                    finished[b].add(score / (t ** cfg.length_penalty), seq)
                    continue
                next_rows.append(b * k + beam)
                next_tokens.append(token)
                next_scores.append(score)
                kept += 1
            while kept < k:  # the image is done (or ran out of candidates): pad with dead beams
                next_rows.append(b * k)
                next_tokens.append(eos)
                next_scores.append(-math.inf)
                kept += 1
        if all(h.full for h in finished):
            break
        parents = torch.tensor(next_rows, device=device)
        tokens = torch.cat([tokens[parents], torch.tensor(next_tokens, device=device)[:, None]], dim=1)
        scores = torch.tensor(next_scores, device=device).view(batch, k)
    return [h.items[0][1] if h.items else [] for h in finished]
