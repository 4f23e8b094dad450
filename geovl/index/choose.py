"""Pick a faiss index type for a collection size, dimension and memory budget.

The thresholds are constants below, set from measurements recorded in docs/benchmarks.md (index section):

1. **Flat** while the raw float32 vectors fit in :data:`FLAT_MAX_BYTES`: an exact scan stays within a few ms per
   query, is exact and supports removal.
2. **IVF{nlist},SQ8 with exact re-ranking** above that: the inverted lists hold 8-bit codes (1 byte per dimension,
   4x smaller than float32), the search asks them for ``k *`` :data:`RERANK_K_FACTOR` candidates and re-ranks those
   by exact inner product with the float32 vectors kept in ``vectors.npy`` in the index folder, memory-mapped
   (:mod:`geovl.index.rerank`). RAM holds the codes; recall is that of exact scoring over the candidates. ``nlist``
   is ``2 * sqrt(n)`` rounded to a power of two below 10M vectors, ``16 * sqrt(n)`` clipped to 2^16..2^18 above,
   and never more than ``n / 39`` (faiss' minimum of 39 training points per list). With 2^14 or more lists the
   coarse quantizer is HNSW32 (``IVF{nlist}_HNSW32``) so assigning a query stays cheap.
3. **OPQ{m},IVF{nlist},PQ{m} with re-ranking** when even SQ8 codes do not fit the budget, with the largest ``m`` in
   (64, 32, 16, 8) that fits.

HNSW graphs are not chosen automatically: at 1M vectors HNSW32 needed the float vectors plus 270 bytes of links
per vector in RAM and took 255 s to build on 2 cores, for no better latency than IVF-SQ8 with re-ranking (pass
``factory="HNSW32"`` to build one anyway). Sharded builds (``ivf_only``) merge inverted lists and keep no
``vectors.npy``: they use IVF-Flat when it fits the budget, then SQ8, then OPQ+PQ, without re-ranking.

Default search parameters: ``nprobe = clip(nlist // 256, 8, 128)`` and ``efSearch = 128``;
:func:`geovl.index.calibrate.calibrate` then measures recall on a sample of the collection at build time and
raises ``nprobe`` until it reaches the recall target. Both the parameters and the measured figures are recorded in
the index manifest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from geovl.index.faisslib import faiss_module

FLAT_MAX_BYTES = 128 * 2**20
"""Largest float32 collection (bytes) searched exactly by default (a few ms per query on a 2-core CPU)."""
IVF_SMALL_MAX_VECTORS = 10_000_000
"""Below this IVF uses ``2 * sqrt(n)`` lists; above, 2^16 and more."""
IVF_HNSW_QUANTIZER_MIN_LISTS = 2**14
"""From this many lists on, the coarse quantizer is an HNSW graph instead of a flat scan of the centroids."""
MIN_POINTS_PER_LIST = 39
"""faiss' k-means warns below 39 training points per centroid."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128
REFINE_K_FACTOR = 4
"""Refine types re-rank ``4 * k`` candidates by default."""
RERANK_K_FACTOR = 3
"""Re-ranking indexes re-score ``3 * k`` ANN candidates with the exact vectors by default (at 1M, k x 2 already
recovered all but 0.003 of the recall that k x 4 gives: docs/benchmarks.md)."""
PQ_M_CHOICES = (64, 32, 16, 8)
TRAIN_MAX_BYTES = 2**30
"""Cap on the float32 training sample (1 GiB: 524,288 vectors at 512-d)."""

_IDMAP_OVERHEAD = 56  # bytes per vector for IndexIDMap2: 8 in id_map + ~48 in the reverse hash map


@dataclass
class IndexParams:
    """Build and default search parameters of an index (``None`` where they do not apply).

    Attributes:
        nlist: IVF inverted lists.
        nprobe: default IVF lists visited per query.
        hnsw_m: HNSW neighbours per node (``M``; level 0 keeps ``2 * M``).
        ef_construction: HNSW build-time beam width.
        ef_search: default HNSW search beam width (also used for an HNSW coarse quantizer).
        train_size: vectors in the training sample (0 when the index needs no training).
        seed: seed of the training sample and of k-means.
        k_factor: for ``Refine(...)``/``RFlat`` types and re-ranking indexes, candidates re-ranked per requested
            result.
        rerank: whether the index folder keeps the float32 vectors (``vectors.npy``) and searches re-rank their
            ANN candidates with them (:mod:`geovl.index.rerank`).
    """

    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None
    train_size: int = 0
    seed: int = 0
    k_factor: int | None = None
    rerank: bool = False


@dataclass
class IndexChoice:
    """A faiss ``index_factory`` string with its parameters and why it was chosen.

    Attributes:
        factory: the faiss ``index_factory`` string, without an ``IDMap2`` wrapper (added when the type does not
            store ids itself).
        kind: ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``"other"``.
        params: build and default search parameters.
        memory_bytes: estimated RAM of the filled index, in bytes.
        reason: the rule that picked it, in words.
    """

    factory: str
    kind: str
    params: IndexParams = field(default_factory=IndexParams)
    memory_bytes: int = 0
    reason: str = ""


def default_nprobe(nlist: int) -> int:
    """Default IVF lists to visit per query: ``clip(nlist // 256, 8, 128)``, never more than ``nlist``."""
    return int(min(nlist, max(8, min(128, nlist // 256))))


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors (autofaiss' rule; see the module docstring), a power of two >= 1."""
    if n < IVF_SMALL_MAX_VECTORS:
        exp = round(math.log2(max(1.0, 2 * math.sqrt(n))))
    else:
        exp = min(18, max(16, round(math.log2(16 * math.sqrt(n)))))
    cap = max(1, n // MIN_POINTS_PER_LIST)
    return int(2 ** min(exp, int(math.log2(cap))))


def default_train_size(n: int, dim: int, nlist: int | None) -> int:
    """Training sample size: ``64 * nlist`` (at least 10,000), capped by ``n`` and :data:`TRAIN_MAX_BYTES`."""
    want = max(10_000, 64 * (nlist or 1))
    return int(min(n, want, max(1, TRAIN_MAX_BYTES // (4 * dim))))


def _ivf_factory(nlist: int, codec: str) -> str:
    quantizer = "_HNSW32" if nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS else ""
    return f"IVF{nlist}{quantizer},{codec}"


def choose_index(n: int, dim: int, memory_budget_bytes: int | None = None, *, ivf_only: bool = False
                 ) -> IndexChoice:
    """Choose an index type for ``n`` vectors of ``dim`` dimensions (inner product on unit vectors).

    Args:
        n: number of vectors the index will hold.
        dim: vector dimension.
        memory_budget_bytes: RAM the filled index may use, in bytes; ``None`` means no limit. Re-ranking vectors
            live on disk (memory-mapped) and are not counted.
        ivf_only: only IVF types without re-ranking (for sharded builds, which merge inverted lists).

    Returns:
        The choice, with estimated RAM in bytes and the rule that picked it (see the module docstring).
    """
    if n < 1 or dim < 1:
        raise ValueError(f"need n >= 1 and dim >= 1, got n={n}, dim={dim}")
    budget = memory_budget_bytes

    def fits(nbytes: int) -> bool:
        return budget is None or nbytes <= budget

    size = f"{n:,} x {dim}-d"
    raw = 4 * n * dim
    if not ivf_only:
        flat = estimate_memory("Flat", n, dim)
        if raw <= FLAT_MAX_BYTES and fits(flat):
            return IndexChoice("Flat", "flat", IndexParams(), flat,
                               f"{size} is {raw / 2**20:.1f} MiB of float32 (<= {FLAT_MAX_BYTES // 2**20} MiB): an "
                               "exact scan takes a few ms per query, is exact and supports removal")

    nlist = ivf_nlist(n)
    params = IndexParams(nlist=nlist, nprobe=default_nprobe(nlist), train_size=default_train_size(n, dim, nlist))
    if nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS:
        params.ef_search = HNSW_EF_SEARCH
    lead = f"{size}: IVF with {nlist} lists ({_nlist_rule(n)})"
    rerank_note = (f"ANN candidates (k x {RERANK_K_FACTOR}) re-ranked with the exact float32 vectors, memory-mapped "
                   f"from vectors.npy ({raw / 2**20:,.0f} MiB on disk, not counted as RAM)")
    if not ivf_only:
        params.rerank, params.k_factor = True, RERANK_K_FACTOR
        factory = _ivf_factory(nlist, "SQ8")
        mem = estimate_memory(factory, n, dim)
        if fits(mem):
            return IndexChoice(factory, "ivf", params, mem,
                               f"{lead}, SQ8 codes (1 byte per dimension); {rerank_note} ({_budget_text(mem, budget)})")
    else:
        for codec, note in (("Flat", "float32 codes"), ("SQ8", "float32 codes do not fit; SQ8 is 4x smaller")):
            factory = _ivf_factory(nlist, codec)
            mem = estimate_memory(factory, n, dim)
            if fits(mem):
                return IndexChoice(factory, "ivf", params, mem,
                                   f"{lead}, {codec}: {note} ({_budget_text(mem, budget)})")
    m_fit = [m for m in PQ_M_CHOICES if fits(estimate_memory(f"OPQ{m},{_ivf_factory(nlist, f'PQ{m}')}", n, dim))]
    m = m_fit[0] if m_fit else PQ_M_CHOICES[-1]
    factory = f"OPQ{m},{_ivf_factory(nlist, f'PQ{m}')}"
    mem = estimate_memory(factory, n, dim)
    over = "" if m_fit else " (over budget even at PQ8)"
    tail = rerank_note if params.rerank else "no re-ranking in sharded builds: PQ alone loses recall at 512-d"
    return IndexChoice(factory, "ivf", params, mem,
                       f"{lead}, OPQ+PQ{m}: SQ8 does not fit{over} ({_budget_text(mem, budget)}); {tail}")


def describe_factory(factory: str, n: int, dim: int) -> IndexChoice:
    """Validate an explicit faiss ``index_factory`` string and describe it like :func:`choose_index` does.

    Args:
        factory: e.g. ``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF4096,SQ8"``, ``"OPQ64,IVF4096,PQ64"``.
            A leading ``IDMap``/``IDMap2`` is accepted and dropped (ids are handled automatically).
        n: number of vectors the index will hold.
        dim: vector dimension.

    Raises:
        ValueError: the string is not a valid faiss factory for ``dim`` dimensions, or is a binary index.
    """
    faiss = faiss_module()
    spec = re.sub(r"^IDMap2?,", "", factory.strip().replace(" ", ""))
    if not spec:
        raise ValueError("empty faiss index_factory string")
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise ValueError(f"invalid faiss index_factory string {factory!r} for {dim}-d inner-product search: {msg}. "
                         "Examples: "
                         "'Flat', 'HNSW32', 'IVF1024,Flat', 'IVF4096,SQ8', 'OPQ64,IVF4096,PQ64'") from exc
    if "NSG" in spec:
        raise ValueError(f"{factory!r}: NSG graphs must be built in a single add of all vectors, while geovl adds "
                         "partition by partition to bound memory; use 'HNSW32' instead")
    top = faiss.downcast_index(index)
    while isinstance(top, faiss.IndexPreTransform):
        top = faiss.downcast_index(top.index)
    ivf = top if isinstance(top, faiss.IndexIVF) else None  # IVF under e.g. a refine stage is not mergeable
    params = IndexParams()
    if ivf is not None:
        kind = "ivf"
        params.nlist = int(ivf.nlist)
        params.nprobe = default_nprobe(params.nlist)
        if re.search(r"IVF\d+_HNSW", spec):
            params.ef_search = HNSW_EF_SEARCH
    elif (inner := faiss.try_extract_index_ivf(index)) is not None:  # e.g. IVF under a refine stage
        kind = "other"
        params.nlist = int(inner.nlist)
        params.nprobe = default_nprobe(params.nlist)
    elif (hm := re.search(r"HNSW(\d+)", spec)) is not None:
        kind = "hnsw"
        params.hnsw_m, params.ef_construction, params.ef_search = int(hm.group(1)), HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH
    elif isinstance(faiss.downcast_index(index), faiss.IndexFlatCodes):
        kind = "flat"
    else:
        kind = "other"
    if re.search(r"Refine\(|RFlat", spec):
        params.k_factor = REFINE_K_FACTOR
    if not index.is_trained:
        params.train_size = default_train_size(n, dim, params.nlist)
    mem = estimate_memory(spec, n, dim)
    return IndexChoice(spec, kind, params, mem, f"explicit factory string {spec!r} ({_budget_text(mem, None)})")


_CODEC_RE = re.compile(r"^(Flat|SQ(?:8|6|4|fp16|bf16)|PQ(\d+)(?:x(\d+))?(fs)?r?|RFlat)$")


def estimate_memory(factory: str, n: int, dim: int) -> int:
    """Rough RAM of a filled index in bytes: codes + ids (+ graph links, centroids, transforms, refine codes).

    Unknown codecs are counted as float32 (``4 * dim`` bytes per vector).
    """
    refine = re.search(r"Refine\((\w+)\)", factory)
    if refine is not None:  # a second, exact-ish code per vector for re-ranking
        factory = factory.replace(refine.group(0), "")
    tokens = [t for t in factory.replace("_", ",").split(",") if t]
    per_vec = 0.0 if refine is None or not (m := _CODEC_RE.fullmatch(refine.group(1))) else _code_bytes(m, dim)
    fixed = 0.0
    code = 4.0 * dim
    nlist = 0
    hnsw_m = 0
    for tok in tokens:
        if (m := re.fullmatch(r"IVF(\d+)", tok)) is not None:
            nlist = int(m.group(1))
        elif (m := re.fullmatch(r"HNSW(\d+)", tok)) is not None:
            if nlist:  # HNSW coarse quantizer over the centroids
                fixed += nlist * 2 * int(m.group(1)) * 4 * 1.05
            else:
                hnsw_m = int(m.group(1))
        elif tok.startswith(("OPQ", "PCA")):
            fixed += 4.0 * dim * dim
        elif (c := _CODEC_RE.fullmatch(tok)) is not None:
            code = _code_bytes(c, dim)
    per_vec += code
    if nlist:
        per_vec += 8  # ids stored in the inverted lists
        fixed += 4.0 * nlist * dim
    else:
        per_vec += _IDMAP_OVERHEAD
    if hnsw_m:
        per_vec += 2 * hnsw_m * 4 * 1.05 + 12  # level-0 links + upper levels + offsets/levels
    return int(per_vec * n + fixed)


def _code_bytes(m: re.Match[str], dim: int) -> float:
    tok = m.group(1)
    if tok == "Flat" or tok == "RFlat":
        return 4.0 * dim
    if tok.startswith("SQ"):
        return {"SQ8": 1.0, "SQ6": 0.75, "SQ4": 0.5, "SQfp16": 2.0, "SQbf16": 2.0}[tok] * dim
    bits = int(m.group(3)) if m.group(3) else 8
    return math.ceil(int(m.group(2)) * bits / 8)


def _nlist_rule(n: int) -> str:
    if n < IVF_SMALL_MAX_VECTORS:
        return "2*sqrt(n) rounded to a power of two"
    return "16*sqrt(n) rounded to a power of two, clipped to 2^16..2^18"


def _budget_text(mem: int, budget: int | None) -> str:
    est = f"~{mem / 2**20:,.1f} MiB"
    return est if budget is None else f"{est} of a {budget / 2**20:,.1f} MiB budget"
