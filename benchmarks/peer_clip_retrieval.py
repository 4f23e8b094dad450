"""geovl against clip-retrieval, the most used CLIP search pipeline: same images, same architecture and weights.

Usage::

    python benchmarks/peer_clip_retrieval.py                    # 320 UCM images, installs the peer venv once
    python benchmarks/peer_clip_retrieval.py --images 64 --queries 40 --repeats 1    # a quick trial
    python benchmarks/peer_clip_retrieval.py --no-install       # "skipped: ..." (exit 0) without the peer venv
    python benchmarks/peer_clip_retrieval.py --data ../shared/data/eurosat_rgb --peer-workers 1

What it does, in one run:

1. **The peer venv.** clip-retrieval lives in a venv of its own (``--peer-venv``, default ``out/peer-venv``), made
   with this Python's ``-m venv`` and ``pip install clip-retrieval`` on first use (a few minutes; ``--no-install``
   skips the benchmark instead). Two pins beside it: ``setuptools<81`` (its ``clip-anytorch`` dependency imports
   ``pkg_resources``) and geovl's Pillow version (the same JPEG decoder and resize on both sides). By default the
   peer venv sees geovl's own PyTorch build (torch, torchvision, triton and the CUDA libraries, linked in through a
   ``.pth`` file; ``--peer-torch registry`` installs the registry's instead): both pipelines then run the same
   kernels, so the comparison measures the pipelines, and no second multi-GB torch is downloaded.
2. **The same model in both.** geovl's default model (``geovl-rs-small``) is loaded in fp32 and written as an
   open_clip model config plus a safetensors state dict of all its weights (MiniLM text tower included).
   ``benchmarks/peer_clip_retrieval_launcher.py`` registers both with open_clip inside the peer venv, so
   clip-retrieval loads them by its ordinary model name ``open_clip:geovl-effnet-lite0-minilm/geovl``, with the
   model's own preprocessing (160 px, bicubic resize of the shortest side, centre crop, mean / std 0.5). The launcher
   also puts the model in eval mode: clip-retrieval leaves open_clip models in training mode, which for this model
   (BatchNorm, dropout in MiniLM) changes the embeddings (``--peer-as-shipped`` shows by how much). Sameness is
   measured, not assumed: the cosine between the two pipelines' embeddings of every image, and of a few texts.
3. **Embedding throughput.** ``clip-retrieval inference`` (its Python entry, image-only: ``enable_text=False``;
   ``num_prepro_workers`` 0 and 1, ``--peer-workers``, its default of 4 being meant for larger machines) and
   ``geovl embed`` (subprocess, default model, default precision ``auto``, and again with ``--precision fp32``,
   like for like: clip-retrieval runs fp32 on a CPU) embed the same images at the same batch size, alternating,
   after a warm-up round. *Wall* img/s is the whole command (interpreter start, imports, model load, decode, model,
   writes); *steady* img/s is each tool's own embedding loop (geovl: the ``seconds`` it prints, which include its
   first forward pass; clip-retrieval: the summed per-batch ``total_duration`` of its stats file, i.e. after its
   model load and its two warm-up passes at the batch size). The steady state comparable with the latter is geovl's
   ``run_embed`` (the library call ``geovl embed`` makes) in this process on a loaded, warmed-up model. Timed in
   the same rounds, at the same batch size: geovl's forward (the model as geovl loads it, BatchNorm folded and
   channels-last) on pre-decoded tensors, and the *bare model* (``load_backbone(optimize=False)``, the network
   clip-retrieval runs) in a plain ``model.encode_image`` loop, on pre-decoded tensors and with each batch decoded
   first (PIL and the model's transform: the issue's "decode included"). The ratios take clip-retrieval's faster
   worker setting.
4. **Search back ends.** geovl's fp32 vectors are indexed twice: ``geovl index build`` and ``clip-retrieval index``
   (autofaiss) over the same vectors written in clip-retrieval's embeddings layout. ``geovl serve --index`` and
   ``clip-retrieval back`` (flags needed offline: no multilingual model, no aesthetic embeddings, no TorchScript;
   bound to 127.0.0.1) then get the same queries over HTTP: text queries (UCM captions, each used once) and vector
   queries (``vector`` / ``embedding_input``), k = 10, first one client at a time, then ``--clients`` at once.

Output: Markdown tables on stdout. Nothing is asserted. Servers are stopped (their process groups) on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "peer_clip_retrieval_launcher.py"
SHARED = HERE.parents[1] / "shared" / "data"
DEFAULT_DATA = SHARED / "ucm_captions" / "images"
CAPTION_FILES = (SHARED / "ucm_captions" / "dataset.json", SHARED / "rsicd_train" / "dataset.json")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}  # what clip-retrieval's files reader globs
K = 10
#: MiniLM files the peer needs to build the text tower and its tokenizer; the weights come from the state dict
TEXT_CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], *, log_to: Path | None = None,
        env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command to completion; returns (wall seconds, stdout). Fails with the output's tail."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if log_to is not None:
        log_to.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


# ---------------------------------------------------------------- the peer venv


def _shared_torch_entries() -> list[Path]:
    """site-packages entries of this environment's torch build: torch, torchvision, triton and the nvidia / cuda
    packages, each with its dist-info (so that pip in the peer venv sees them installed)."""
    from importlib import metadata

    entries: set[Path] = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-")):
            root = Path(str(dist.locate_file("")))
            for f in dist.files or []:
                top = f.parts[0]
                if top not in ("..", "__pycache__") and (root / top).exists():
                    entries.add(root / top)
    return sorted(entries)


def peer_python(venv: Path) -> Path | None:
    """The peer venv's Python when clip-retrieval imports there, else ``None``."""
    py = venv / "bin" / "python"
    if not py.is_file():
        return None
    ok = subprocess.run([str(py), "-c", "import clip_retrieval.clip_back, clip_retrieval.clip_inference.main, "
                                        "open_clip, all_clip"], capture_output=True).returncode == 0
    return py if ok else None


def install_peer(venv: Path, torch_from: str) -> Path:
    """Make the peer venv and install clip-retrieval into it (see the module docstring)."""
    import PIL

    log(f"creating the peer venv {venv} (venv + pip install clip-retrieval: a few minutes, once)")
    if venv.exists():
        shutil.rmtree(venv)
    # this Python's venv module: the same interpreter version as geovl's, which sharing its torch build needs
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    if torch_from == "geovl":
        shared = venv / "shared-torch"
        shared.mkdir()
        for entry in _shared_torch_entries():
            (shared / entry.name).symlink_to(entry)
        site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        (site / "geovl_shared_torch.pth").write_text(f"{shared.resolve()}\n")
    pins = ["clip-retrieval", "setuptools<81", f"pillow=={PIL.__version__}"]
    log_file = venv / "pip-install.log"
    with log_file.open("w") as fh:
        proc = subprocess.run([str(py), "-m", "pip", "install", *pins], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or peer_python(venv) is None:
        raise RuntimeError(f"installing clip-retrieval into {venv} failed; see {log_file}")
    return py


def peer_versions(py: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m, torch, open_clip; print(json.dumps({'clip-retrieval': "
            "m.version('clip-retrieval'), 'open_clip': open_clip.__version__, 'torch': torch.__version__, "
            "'torch_path': torch.__file__, 'autofaiss': m.version('autofaiss'), 'faiss': m.version('faiss-cpu'), "
            "'pillow': m.version('pillow'), 'transformers': m.version('transformers')}))")
    out = subprocess.run([str(py), "-W", "ignore", "-c", code], check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# ---------------------------------------------------------------- inputs


def pick_images(folder: Path, n: int, dest: Path) -> list[Path]:
    """A seeded sample of ``n`` images of ``folder`` (recursively), copied flat into ``dest`` (clip-retrieval's
    ``files`` input: a folder of images; geovl embed takes the same folder)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < n:
        raise SystemExit(f"{folder} holds {len(files)} images, fewer than --images {n}")
    picked = [files[i] for i in sorted(np.random.default_rng(0).permutation(len(files))[:n])]
    dest.mkdir(parents=True)
    out = []
    for i, f in enumerate(picked):
        target = dest / f"{i:05d}_{f.parent.name}_{f.name}"
        shutil.copyfile(f, target)
        out.append(target)
    return out


def query_texts(n: int) -> list[str]:
    """``n`` distinct captions (UCM, then RSICD), seeded order: every text query is new to both servers."""
    seen: dict[str, None] = {}
    for path in CAPTION_FILES:
        if path.is_file():
            for img in json.loads(path.read_text())["images"]:
                for s in img["sentences"]:
                    seen.setdefault(s["raw"].strip(), None)
    texts = list(seen)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct captions in {', '.join(map(str, CAPTION_FILES))}")
    return [texts[i] for i in np.random.default_rng(1).permutation(len(texts))[:n]]


def export_model(backbone: Any, dest: Path) -> str:
    """Write ``backbone`` (fp32, open_clip) as an open_clip model config + safetensors state dict for the peer."""
    from safetensors.torch import save_file

    from geovl.models.text_models import resolve_text_model

    dest.mkdir(parents=True)
    arch = backbone.info.architecture
    cfg = json.loads(json.dumps(backbone.towers.model_cfg))
    cfg["vision_cfg"]["timm_model_pretrained"] = False  # weights come from the state dict, not a download
    text = cfg.get("text_cfg", {})
    if "hf_model_name" in text:
        src = Path(resolve_text_model(text["hf_model_name"]))
        local = dest / "text-config"
        local.mkdir()
        for name in TEXT_CONFIG_FILES:  # no weights file: the tower is built from config, then loaded
            if (src / name).is_file():
                shutil.copyfile(src / name, local / name)
        text.update(hf_model_name=str(local), hf_tokenizer_name=str(local), hf_model_pretrained=False)
    (dest / f"{arch}.json").write_text(json.dumps(cfg, indent=1))
    state = {k: v.detach().float().contiguous() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(dest / "weights.safetensors"))
    pre = backbone.preprocess
    (dest / "peer_model.json").write_text(json.dumps({
        "arch": arch, "weights": "weights.safetensors", "source": backbone.info.name,
        "preprocess": {"image_size": pre.image_size, "mean": list(pre.mean), "std": list(pre.std),
                       "interpolation": pre.interpolation, "resize_mode": pre.resize_mode}}, indent=1))
    return f"{backbone.info.name}: {len(state)} tensors, preprocess {pre}"


# ---------------------------------------------------------------- embedding runs


def peer_embeddings(out: Path) -> dict[str, np.ndarray]:
    """clip-retrieval's image embeddings by file name."""
    import pyarrow.parquet as pq

    result: dict[str, np.ndarray] = {}
    for npy in sorted((out / "img_emb").glob("img_emb_*.npy")):
        part = npy.stem.split("_")[-1]
        names = pq.read_table(out / "metadata" / f"metadata_{part}.parquet").column("image_path").to_pylist()
        for name, vec in zip(names, np.load(npy).astype(np.float32), strict=True):
            result[Path(name).name] = vec
    return result


def geovl_embeddings(out: Path) -> dict[str, np.ndarray]:
    from geovl.index.pipeline import read_embeddings

    emb, table, _ = read_embeddings(out)
    return {Path(p).name: v for p, v in zip(table.column("path").to_pylist(), emb, strict=True)}


def cosines(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    common = sorted(set(a) & set(b))
    x, y = np.stack([a[k] for k in common]), np.stack([b[k] for k in common])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.asarray((x * y).sum(axis=1))


# ---------------------------------------------------------------- servers and clients


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether anything still accepts connections on ``port`` (TIME_WAIT sockets of closed clients do not)."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def servers() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start servers in their own process groups; stop each of those groups on exit, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []

    def start(cmd: Sequence[str | Path], log_file: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with log_file.open("wb") as fh:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log_file: Path, since: float, timeout: float = 600) -> float:
    """Poll ``url`` until it answers 200; returns seconds since ``since`` (the server's launch)."""
    import httpx

    while time.perf_counter() - since < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode}); log:\n{log_file.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - since
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s; log: {log_file}")


Query = str | list[float]  # a text query or a query vector


class Backend:
    """One search server: its URL, how a query becomes a request body, and a response becomes file names."""

    def __init__(self, name: str, url: str, body: Callable[[Query], dict[str, Any]],
                 names: Callable[[Any], list[str]]) -> None:
        self.name, self.url, self.body, self.names = name, url, body, names


def geovl_backend(name: str, port: int) -> Backend:
    def body(q: Query) -> dict[str, Any]:
        return {"text": q, "k": K} if isinstance(q, str) else {"vector": q, "k": K}

    return Backend(name, f"http://127.0.0.1:{port}/v1/search", body,
                   lambda r: [Path(h["metadata"]["path"]).name for h in r["hits"]])


def peer_backend(port: int) -> Backend:
    def body(q: Query) -> dict[str, Any]:
        query = {"text": q} if isinstance(q, str) else {"embedding_input": q}
        return {**query, "modality": "image", "num_images": K, "indice_name": "geovl"}

    return Backend("clip-retrieval back (fp32)", f"http://127.0.0.1:{port}/knn-service", body,
                   lambda r: [Path(h["image_path"]).name for h in r])


def load_test(backend: Backend, warmup: Sequence[Query], queries: Sequence[Query], clients: int) -> dict[str, Any]:
    """Send ``warmup`` (untimed), then every query once, ``clients`` at a time, each client back to back."""
    import httpx

    with httpx.Client(timeout=120) as c:
        for q in warmup:
            c.post(backend.url, json=backend.body(q)).raise_for_status()
    latencies = [0.0] * len(queries)
    results: list[list[str]] = [[] for _ in queries]
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(range(len(queries)))

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = c.post(backend.url, json=backend.body(queries[i]))
                latencies[i] = time.perf_counter() - t0
                if r.status_code == 200:
                    results[i] = backend.names(r.json())
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "qps": len(queries) / wall,
            "errors": errors, "results": results, "full": sum(len(r) == K for r in results)}


# ---------------------------------------------------------------- report


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bare_loop(bb: Any, pixels: Any, batch_size: int, images: Sequence[Path] | None) -> float:
    """Seconds for the plain loop a user would write around the model: ``model.encode_image`` under
    ``inference_mode`` on ``pixels`` in batches, or, with ``images``, on each batch decoded first (PIL, RGB, the
    model's transform)."""
    import torch
    from PIL import Image

    model = bb.model
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(pixels), batch_size):
            if images is None:
                batch = pixels[i:i + batch_size]
            else:
                batch = torch.stack([bb.transform(Image.open(p).convert("RGB")) for p in images[i:i + batch_size]])
            model.encode_image(batch.to(bb.dtype)).float()
    return time.perf_counter() - start


# ---------------------------------------------------------------- the benchmark


class Bench:
    """One run: the peer venv, the scratch folder, the two backbones (fp32 and the default precision)."""

    def __init__(self, args: argparse.Namespace, py: Path, work: Path) -> None:
        from geovl.models import load_backbone

        self.args, self.py, self.work = args, py, work
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.runs = work / "runs"
        self.runs.mkdir(exist_ok=True)
        self.model_dir = work / "peer_model"
        # geovl's own loading (BatchNorm folded, channels-last: what geovl embed runs) and the model as it is
        # (optimize=False: what clip-retrieval and a hand-written loop run), which the export writes out
        self.bb32 = load_backbone(device="cpu", precision="fp32")
        self.bb_auto = load_backbone(device="cpu", precision="auto")
        self.plain32 = load_backbone(device="cpu", precision="fp32", optimize=False)
        self.plain_auto = load_backbone(device="cpu", precision="auto", optimize=False)
        self.auto = self.bb_auto.precision
        self.model_note = export_model(self.plain32, self.model_dir)
        self.images = pick_images(args.data, args.images, work / "images")
        self.peer_env = {**os.environ, "GEOVL_PEER_AS_SHIPPED": "1" if args.peer_as_shipped else "0"}

    def peer(self, *action: str | Path) -> list[str | Path]:
        return [self.py, "-W", "ignore", LAUNCHER, self.model_dir, *action]

    def header(self) -> None:
        import torch

        import geovl
        from geovl.tasks.embedding import default_decode_workers

        a = self.args
        v = peer_versions(self.py)
        torch_note = "geovl's torch build, linked" if "shared-torch" in v["torch_path"] else "its own torch"
        eval_note = ("run as shipped: model left in training mode" if a.peer_as_shipped else
                     "the launcher puts the model in eval mode, which clip-retrieval omits for open_clip models")
        print(f"# geovl vs clip-retrieval, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, no GPU; "
              f"load average before the run {load}")
        print(f"- geovl {geovl.__version__}: torch {torch.__version__}; model {self.model_note}")
        print(f"- clip-retrieval {v['clip-retrieval']} in {a.peer_venv}: open_clip {v['open_clip']}, torch "
              f"{v['torch']} ({torch_note}), autofaiss {v['autofaiss']}, faiss {v['faiss']}, transformers "
              f"{v['transformers']}, pillow {v['pillow']}; {eval_note}")
        print(f"- images: {len(self.images)} from {a.data} (seeded sample), batch {a.batch_size} in both; "
              f"clip-retrieval: image only (enable_text=False), num_prepro_workers {a.peer_workers} (its default, "
              f"4, assumes more cores), its defaults otherwise (fp32 on a CPU, use_jit=False); geovl embed: its "
              f"defaults ({default_decode_workers('cpu')} decode workers here; 0: decoding in the model's process), "
              f"precision auto = {self.auto}, and fp32")
        print("- preprocessing: the same in both (160 px, bicubic resize of the shortest side, centre crop, mean and "
              "std 0.5), given to open_clip as the weights' pretrained config")
        print(f"- command: python {' '.join(sys.argv)}\n")

    # ---- embedding
    def embed(self) -> dict[str, Path]:
        a, auto = self.args, self.auto
        pixels = self.bb32.preprocess_images(self.images)
        peers = [f"peer-w{w}" for w in a.peer_workers.split(",")]
        variants = [*peers, "geovl-auto", "geovl-fp32", "lib-auto", "lib-fp32", "fwd-auto", "fwd-fp32",
                    "bare-auto", "bare-fp32", "baredec-auto", "baredec-fp32"]
        times: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for r in range(a.repeats + 1):
            for v in variants:
                log(f"round {r}{' (warm-up)' if r == 0 else ''}: {v}")
                res = self._embed_once(v, self.runs / f"{v}-r{r}", pixels)
                if r > 0:
                    times[v].append(res)
        n = len(self.images)

        def rate(v: str, key: str = "steady") -> float:
            return n / median([t[key] for t in times[v]])

        labels = {p: f"clip-retrieval inference (fp32, {p[6:]} prepro worker(s))" for p in peers}
        labels.update({"geovl-auto": f"geovl embed ({auto}, default)", "geovl-fp32": "geovl embed --precision fp32",
                       "lib-auto": f"geovl embed's run_embed, warm model ({auto})",
                       "lib-fp32": "geovl embed's run_embed, warm model (fp32)",
                       "fwd-auto": f"geovl's forward on pre-decoded tensors ({auto})",
                       "fwd-fp32": "geovl's forward on pre-decoded tensors (fp32)",
                       "bare-auto": f"bare model forward on pre-decoded tensors ({auto})",
                       "bare-fp32": "bare model forward on pre-decoded tensors (fp32)",
                       "baredec-auto": f"bare model forward, decode included ({auto})",
                       "baredec-fp32": "bare model forward, decode included (fp32)"})
        whole = ("peer", "geovl")
        rows = [[labels[v], f"{rate(v, 'wall'):.1f}" if v.startswith(whole) else "-", f"{rate(v):.1f}",
                 f"{median([t['wall'] for t in times[v]]):.2f}"] for v in variants]
        print(f"## Embedding {n} images (medians of {a.repeats} alternating rounds after a warm-up round)\n")
        print(table(["pipeline", "wall img/s", "loop img/s", "s (command, else loop)"], rows))
        print("\n- wall: the whole command (start, imports, model load, warm-up, decode, model, writes).\n"
              "- loop: the tool's own embedding loop (decode, model, writes). geovl embed: the seconds it prints, "
              "which include the first forward pass of a fresh process; clip-retrieval: its stats' summed per-batch "
              "total_duration, after its two warm-up passes at the batch size.\n"
              "- run_embed, warm model: the library call geovl embed makes, in this process with the model loaded and "
              "warmed up (no start, no load), i.e. the steady state comparable with clip-retrieval's loop.\n"
              "- geovl's forward: the model as geovl loads it (BatchNorm folded into the convolutions, channels-last "
              "layout; geovl.models.inference) on the images pre-decoded into tensors.\n"
              "- bare model: the open_clip model as it is (load_backbone(optimize=False), what clip-retrieval runs) "
              "in a plain loop: model.encode_image on pre-decoded tensors, or, *decode included*, each batch "
              "decoded with PIL and the model's own transform first, one image after another.\n")
        best = {"wall": max(peers, key=lambda v: rate(v, "wall")), "steady": max(peers, key=rate)}
        peer_wall, peer_loop = rate(best["wall"], "wall"), rate(best["steady"])
        ratios = []
        for prec in ("auto", "fp32"):
            name, cli, lib, bare = (auto if prec == "auto" else "fp32"), f"geovl-{prec}", f"lib-{prec}", f"bare-{prec}"
            dec, fwd = f"baredec-{prec}", f"fwd-{prec}"
            ratios += [[f"geovl ({name}) / clip-retrieval, whole commands", f"{rate(cli, 'wall') / peer_wall:.2f}x"],
                       [f"geovl ({name}) / clip-retrieval, embedding loops", f"{rate(cli) / peer_loop:.2f}x"],
                       [f"geovl ({name}) warm run_embed / clip-retrieval's loop", f"{rate(lib) / peer_loop:.2f}x"],
                       [f"geovl embed loop / bare model, decode included ({name})", f"{rate(cli) / rate(dec):.2f}"],
                       [f"geovl warm run_embed / bare model, decode included ({name})",
                        f"{rate(lib) / rate(dec):.2f}"],
                       [f"geovl embed loop / bare model on pre-decoded tensors ({name})",
                        f"{rate(cli) / rate(bare):.2f}"],
                       [f"geovl forward / bare forward, pre-decoded tensors ({name})", f"{rate(fwd) / rate(bare):.2f}"],
                       [f"geovl embed loop / geovl's own forward on pre-decoded tensors ({name})",
                        f"{rate(cli) / rate(fwd):.2f}"]]
        print(table(["ratio of img/s", "value"], ratios))
        print(f"\nclip-retrieval's faster setting is used: {labels[best['wall']]} for whole commands, "
              f"{labels[best['steady']]} for loops.")
        last = a.repeats
        return {"peer": self.runs / f"{best['steady']}-r{last}", "geovl-fp32": self.runs / f"geovl-fp32-r{last}",
                "geovl-auto": self.runs / f"geovl-auto-r{last}"}

    def _embed_once(self, variant: str, out: Path, pixels: Any) -> dict[str, float]:
        a, folder = self.args, self.work / "images"
        if variant.startswith("peer-w"):
            wall, _ = run(self.peer("inference", folder, out, str(a.batch_size), variant[6:]), env=self.peer_env,
                          log_to=self.logs / f"{out.name}.log")
            stats = [json.loads(p.read_text()) for p in (out / "stats").glob("*.json")
                     if not p.name.startswith("wip_")]
            return {"wall": wall, "steady": sum(s["total_duration"] for s in stats)}
        if variant.startswith("geovl-"):
            cmd: list[str | Path] = [sys.executable, "-m", "geovl", "embed", folder, "--out", out, "--batch-size",
                                     str(a.batch_size), "--quiet"]
            if variant == "geovl-fp32":
                cmd += ["--precision", "fp32"]
            wall, stdout = run(cmd, log_to=self.logs / f"{out.name}.log")
            return {"wall": wall, "steady": float(json.loads(stdout.strip().splitlines()[-1])["seconds"])}
        auto = variant.endswith("-auto")
        bb = self.bb_auto if auto else self.bb32
        if variant.startswith("lib-"):
            from geovl.data.sources import sources_for
            from geovl.index.pipeline import EmbedConfig, run_embed

            config = EmbedConfig(batch_size=a.batch_size, progress=False)
            seconds = run_embed(bb, sources_for([folder]), out, config).seconds
            return {"wall": seconds, "steady": seconds}
        if variant.startswith("bare"):
            seconds = bare_loop(self.plain_auto if auto else self.plain32, pixels, a.batch_size,
                                self.images if variant.startswith("baredec-") else None)
            return {"wall": seconds, "steady": seconds}
        start = time.perf_counter()
        bb.encode_images(pixels, batch_size=a.batch_size)
        seconds = time.perf_counter() - start
        return {"wall": seconds, "steady": seconds}

    # ---- sameness
    def sameness(self, outs: dict[str, Path]) -> dict[str, np.ndarray]:
        peer = peer_embeddings(outs["peer"])
        g32, gauto = geovl_embeddings(outs["geovl-fp32"]), geovl_embeddings(outs["geovl-auto"])
        c32, cauto = cosines(g32, peer), cosines(gauto, peer)
        texts = query_texts(16)
        (self.work / "texts.json").write_text(json.dumps(texts))
        run(self.peer("encode-texts", self.work / "texts.json", self.work / "texts.npy"), env=self.peer_env,
            log_to=self.logs / "encode-texts.log")
        ctext = (self.bb32.encode_texts(texts) * np.load(self.work / "texts.npy")).sum(axis=1)
        print("\n## The same model in both: cosine between the two pipelines' embeddings\n")
        print(table(["pair", "items", "mean cosine", "min cosine"], [
            ["images: geovl embed fp32 vs clip-retrieval (which stores fp16)", len(c32), f"{c32.mean():.6f}",
             f"{c32.min():.6f}"],
            [f"images: geovl embed {self.auto} vs clip-retrieval", len(cauto), f"{cauto.mean():.6f}",
             f"{cauto.min():.6f}"],
            ["texts: geovl fp32 vs clip-retrieval's loader", len(ctext), f"{ctext.mean():.6f}",
             f"{ctext.min():.6f}"],
        ]))
        return g32

    # ---- search
    def search(self, vectors: dict[str, np.ndarray], geovl_emb: Path) -> None:
        a, work = self.args, self.work
        names = sorted(vectors)
        peer_build, peer_key, geovl_build, geovl_key = self._indexes(vectors, names, geovl_emb)
        texts = query_texts(2 * (a.queries + 5))
        rng = np.random.default_rng(2)
        base = np.stack([vectors[k] for k in names])
        noisy = base[rng.integers(0, len(base), a.queries + 5)]
        noisy = noisy + rng.normal(0, 0.03, noisy.shape).astype(np.float32)
        vecs: list[Query] = [(v / np.linalg.norm(v)).round(6).tolist() for v in noisy]
        text_sets: list[list[Query]] = [list(texts[: a.queries + 5]), list(texts[a.queries + 5:])]
        ports = {"peer": free_port(), "auto": free_port(), "fp32": free_port()}
        rows: list[list[Any]] = []
        overlap: dict[str, list[float]] = {}
        with servers() as start:
            launched, procs, logs = {}, {}, {}
            logs["peer"] = self.logs / "peer-back.log"
            launched["peer"] = time.perf_counter()
            procs["peer"] = start(self.peer("back", work / "indices.json", str(ports["peer"])), logs["peer"],
                                  env=self.peer_env)
            for prec in ("auto", "fp32"):
                logs[prec] = self.logs / f"geovl-serve-{prec}.log"
                launched[prec] = time.perf_counter()
                procs[prec] = start([sys.executable, "-m", "geovl", "serve", "--index", work / "geovl_index",
                                     "--port", str(ports[prec]), "--precision", prec], logs[prec])
            paths = {"peer": "/indices-list", "auto": "/v1/ready", "fp32": "/v1/ready"}
            ready = {k: wait_ready(f"http://127.0.0.1:{ports[k]}{paths[k]}", procs[k], logs[k], launched[k])
                     for k in ports}
            backends = [peer_backend(ports["peer"]), geovl_backend(f"geovl serve ({self.auto}, default)",
                                                                   ports["auto"]),
                        geovl_backend("geovl serve --precision fp32", ports["fp32"])]
            for mode, clients in (("sequential", 1), (f"{a.clients} clients", a.clients)):
                for kind in ("text", "vector"):
                    qs = vecs if kind == "vector" else text_sets[0 if clients == 1 else 1]
                    got = {}
                    for b in backends:
                        log(f"{b.name}: {kind} queries, {mode}")
                        got[b.name] = res = load_test(b, qs[:5], qs[5:], clients)
                        rows.append([f"{kind}, {mode}", b.name, f"{res['p50']:.2f}", f"{res['p99']:.2f}",
                                     f"{res['qps']:.1f}", f"{res['full']}/{len(qs) - 5}", len(res["errors"])])
                    ref = got[backends[0].name]["results"]
                    for b in backends[1:]:
                        overlap.setdefault(f"{kind} queries: {b.name} vs clip-retrieval back", []).extend(
                            len(set(x) & set(y)) / K for x, y in zip(ref, got[b.name]["results"], strict=True)
                            if x and y)
        print(f"\n## Search over the same {len(names)} vectors: k = {K}, {a.queries} timed queries per row after 5 "
              "untimed (text queries are distinct captions, none repeated)\n")
        print(f"- indexes: clip-retrieval index (autofaiss) built `{peer_key}` in {peer_build:.1f} s; geovl index "
              f"build built `{geovl_key}` in {geovl_build:.1f} s (command wall times)")
        print(f"- ready after launch: clip-retrieval back {ready['peer']:.1f} s, geovl serve ({self.auto}) "
              f"{ready['auto']:.1f} s, geovl serve fp32 {ready['fp32']:.1f} s (launched together); HTTP clients "
              "(httpx) on the same CPUs")
        print("- clip-retrieval back: enable_mclip_option=False, provide_aesthetic_embeddings=False (both downloads), "
              "use_jit=False (TorchScript fails on the MiniLM tower), columns_to_return=[image_path], bound to "
              "127.0.0.1; defaults otherwise (parquet metadata, Flask's threaded server, fp32)\n")
        print(table(["queries", "server", "p50 ms", "p99 ms", "QPS", "full top-10", "errors"], rows))
        print()
        print(table(["same hits?", "mean top-10 overlap"], [[k, f"{np.mean(v):.3f}"] for k, v in overlap.items()]))
        left = [p for p in ports.values() if listening(p)]
        print(f"\nservers stopped; {'no port still listening' if not left else f'still listening: {left}'}")

    def _indexes(self, vectors: dict[str, np.ndarray], names: list[str],
                 geovl_emb: Path) -> tuple[float, str, float, str]:
        """The same vectors indexed by both tools; returns build seconds and index types."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        work = self.work
        emb_dir = work / "peer_emb"  # clip-retrieval's embeddings layout
        (emb_dir / "img_emb").mkdir(parents=True)
        (emb_dir / "metadata").mkdir()
        np.save(emb_dir / "img_emb" / "img_emb_0.npy", np.stack([vectors[k] for k in names]).astype(np.float32))
        pq.write_table(pa.table({"image_path": [str(work / "images" / k) for k in names]}),
                       emb_dir / "metadata" / "metadata_0.parquet")
        log("clip-retrieval index (autofaiss)")
        peer_build, _ = run(self.peer("index", emb_dir, work / "peer_index"), env=self.peer_env,
                            log_to=self.logs / "peer-index.log")
        peer_key = json.loads((work / "peer_index" / "image.json").read_text()).get("index_key", "?")
        (work / "indices.json").write_text(json.dumps({"geovl": str(work / "peer_index")}))
        log("geovl index build")
        geovl_build, out = run([sys.executable, "-m", "geovl", "index", "build", geovl_emb, "--out",
                                work / "geovl_index", "--quiet"], log_to=self.logs / "geovl-index.log")
        return peer_build, peer_key, geovl_build, json.loads(out).get("index_type", "?")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--images", type=int, default=320, help="images embedded by both pipelines")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder the images are drawn from (seeded)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per forward pass, both pipelines")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (medians reported), after a warm-up round")
    ap.add_argument("--peer-workers", default="0,1",
                    help="clip-retrieval num_prepro_workers (its default is 4); a comma list times each")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per server, query kind and mode")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients in the concurrent mode")
    ap.add_argument("--peer-venv", type=Path, default=HERE.parent / "out" / "peer-venv", help="clip-retrieval's venv")
    ap.add_argument("--peer-torch", choices=["geovl", "registry"], default="geovl",
                    help="geovl: the peer venv links this venv's torch build; registry: pip installs its own")
    ap.add_argument("--peer-as-shipped", action="store_true",
                    help="do not put clip-retrieval's model in eval mode (shows what it computes unpatched)")
    ap.add_argument("--no-install", action="store_true", help="skip (exit 0) when the peer venv is missing")
    ap.add_argument("--skip-search", action="store_true", help="embedding comparison only")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="scratch folder to keep (none: a temporary one, removed at the end)")
    args = ap.parse_args()

    py = peer_python(args.peer_venv)
    if py is None:
        if args.no_install:
            print(f"skipped: clip-retrieval is not installed in {args.peer_venv} (run without --no-install to "
                  "install it there)")
            return 0
        py = install_peer(args.peer_venv, args.peer_torch)
    if not args.data.is_dir():
        print(f"skipped: {args.data} not found (pass --data DIR)")
        return 0
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty; give a new or empty folder")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="geovl-peer-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bench = Bench(args, py, work)
        bench.header()
        outs = bench.embed()
        vectors = bench.sameness(outs)
        if not args.skip_search:
            bench.search(vectors, outs["geovl-fp32"])
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
