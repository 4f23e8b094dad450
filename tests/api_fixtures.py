"""Shared helpers of the HTTP API tests (and the demo's): a live loopback server, test images, the tiny model."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import uvicorn
from PIL import Image

from geovl.api.app import create_app
from geovl.models import Backbone, load_backbone
from geovl.serving.config import ServeConfig


def png_bytes(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def micro_backbone() -> Backbone:
    """The tiny random model every API test serves (deterministic: seed 0, fp32, CPU)."""
    return load_backbone("random:geovl-micro", device="cpu", precision="fp32")


@contextmanager
def live_server(config: ServeConfig, backbone: Backbone) -> Iterator[tuple[str, Any]]:
    """Serve ``create_app(config)`` on a free loopback port; yields (base URL, the app)."""
    app = create_app(config, backbone=backbone)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
