"""Run clip-retrieval with geovl's default model: the peer side of ``benchmarks/peer_clip_retrieval.py``.

This file runs with the *peer* venv's Python (clip-retrieval, open_clip 2.x), never with geovl's, and imports
nothing from geovl. ``peer_clip_retrieval.py`` writes a model folder first (``peer_model.json`` beside an
open_clip model config and a safetensors state dict of the same weights); this script makes clip-retrieval load it
through its ordinary model name, ``open_clip:<arch>/<tag>``:

* the architecture is registered with ``open_clip.add_model_config`` (the config file's stem is its name);
* the weights become an entry of open_clip's pretrained table (``open_clip.pretrained._PRETRAINED``, the same plain
  data that holds open_clip's own tags) with ``file`` pointing at the state dict and the model's preprocessing
  (mean / std, interpolation, resize mode), because a bare local path would get OpenAI's mean and std;
* the loaded model is put in eval mode (:func:`eval_mode`), which clip-retrieval does not do for open_clip models.

Actions (each calls clip-retrieval's own Python entry point, as its CLI does)::

    python peer_clip_retrieval_launcher.py MODEL_DIR inference INPUT_DIR OUTPUT_DIR BATCH WORKERS
    python peer_clip_retrieval_launcher.py MODEL_DIR index EMBEDDINGS_DIR INDEX_DIR
    python peer_clip_retrieval_launcher.py MODEL_DIR back INDICES_JSON PORT
    python peer_clip_retrieval_launcher.py MODEL_DIR encode-texts TEXTS_JSON OUT_NPY
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TAG = "geovl"


def register(model_dir: Path) -> str:
    """Register the exported model with open_clip; returns clip-retrieval's model name for it."""
    import open_clip
    from open_clip import pretrained

    spec = json.loads((model_dir / "peer_model.json").read_text())
    arch = spec["arch"]
    open_clip.add_model_config(str(model_dir / f"{arch}.json"))
    pre = spec["preprocess"]
    pretrained._PRETRAINED.setdefault(arch, {})[TAG] = {
        "file": str(model_dir / spec["weights"]),
        "mean": tuple(pre["mean"]),
        "std": tuple(pre["std"]),
        "interpolation": pre["interpolation"],
        "resize_mode": pre["resize_mode"],
    }
    return f"open_clip:{arch}/{TAG}"


def eval_mode() -> None:
    """Make clip-retrieval's open_clip loader return the model in eval mode.

    all_clip (clip-retrieval's model loader) returns open_clip models as ``create_model`` leaves them: in training
    mode. For ViTs without dropout that changes nothing, but a BatchNorm tower (open_clip's ResNets, this model's
    EfficientNet) normalises each batch by its own statistics and MiniLM applies dropout, so embeddings depend on
    the batch and on chance. Set ``GEOVL_PEER_AS_SHIPPED=1`` to run clip-retrieval unpatched.
    """
    from all_clip import main as all_clip_main

    load = all_clip_main._CLIP_REGISTRY["open_clip:"]

    def load_in_eval_mode(*args: Any, **kwargs: Any) -> Any:
        model, preprocess, tokenizer = load(*args, **kwargs)
        return model.eval(), preprocess, tokenizer

    all_clip_main._CLIP_REGISTRY["open_clip:"] = load_in_eval_mode


def bind_loopback() -> None:
    """clip-retrieval's back end binds 0.0.0.0; bind it to 127.0.0.1 (what geovl serve does) for the benchmark."""
    import flask

    run = flask.Flask.run

    def loopback_run(self: Any, host: str | None = None, port: int | None = None, debug: bool | None = None,
                     load_dotenv: bool = True, **options: Any) -> None:
        run(self, host="127.0.0.1", port=port, debug=debug, load_dotenv=load_dotenv, **options)

    flask.Flask.run = loopback_run


def main(argv: list[str]) -> int:
    model_dir, action, *rest = argv
    name = register(Path(model_dir))
    if os.environ.get("GEOVL_PEER_AS_SHIPPED") != "1":
        eval_mode()
    if action == "inference":
        from clip_retrieval.clip_inference.main import main as inference

        input_dir, output_dir, batch, workers = rest
        # clip-retrieval's defaults otherwise (sequential distributor, use_jit=False, files input)
        inference(input_dataset=input_dir, output_folder=output_dir, input_format="files", batch_size=int(batch),
                  num_prepro_workers=int(workers), enable_text=False, enable_image=True, enable_metadata=False,
                  clip_model=name)
    elif action == "index":
        from clip_retrieval.clip_index import clip_index

        embeddings_dir, index_dir = rest
        clip_index(embeddings_folder=embeddings_dir, index_folder=index_dir)
    elif action == "back":
        from clip_retrieval.clip_back import clip_back

        indices_json, port = rest
        bind_loopback()
        # Off: the multilingual text model and the aesthetic embeddings (both downloads that exist for ViT-B/32 and
        # ViT-L/14 only) and TorchScript (fails on a transformers text tower). Everything else is the default.
        clip_back(indices_paths=indices_json, port=int(port), clip_model=name, enable_mclip_option=False,
                  provide_aesthetic_embeddings=False, use_jit=False, columns_to_return=["image_path"])
    elif action == "encode-texts":
        import numpy as np
        import torch
        from all_clip import load_clip

        texts_json, out_npy = rest
        model, _, tokenizer = load_clip(name, use_jit=False, device="cpu")
        with torch.no_grad():
            emb = model.encode_text(tokenizer(json.loads(Path(texts_json).read_text())))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        np.save(out_npy, emb.float().numpy())
    else:
        raise SystemExit(f"unknown action {action!r}")
    return 0


if __name__ == "__main__":  # clip-retrieval's logger starts spawned processes, which re-import this module
    sys.exit(main(sys.argv[1:]))
