"""Settings of ``geovl demo``, as one typed dataclass (cheap to import: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from geovl.serving.config import ServeConfig

__all__ = ["DemoConfig"]


@dataclass
class DemoConfig:
    """Settings of ``geovl demo`` (its flags map onto these one to one).

    Attributes:
        images: collections to search (folders, GeoTIFF scenes, dataset files, ``format:path``); empty: the default
            gallery (the shared data when present, else synthetic scenes).
        index: an existing ``geovl index`` folder to search instead of building a gallery.
        model, device, precision: the model (as for ``geovl serve``).
        captioner: the Caption tab's captioner (as for ``geovl serve``: loaded on first use, sharing the model when
            it was trained on it); None or ``"none"`` hides the tab.
        change_captioner: the Change tab's change captioner (as for ``geovl serve``: loaded when first needed,
            sharing the model when it was trained on it); None or ``"none"`` hides the tab.
        generator: the Generate tab's text-to-image generator (as for ``geovl serve``: loaded on the first
            generation, sharing the model when it was trained on it); None or ``"none"`` hides the tab.
        host: interface to bind; loopback by default.
        port: TCP port (None: the first free one from 7860).
        share: ask Gradio for a public share link (never on by default).
        max_upload_mb: largest upload accepted.
        cache_dir: gallery caches (default ``$GEOVL_HOME/demo/cache``).
        progress: progress bars while the gallery is embedded.
    """

    images: list[str] = field(default_factory=list)
    index: str | None = None
    model: str = ServeConfig.model
    captioner: str | None = ServeConfig.captioner
    change_captioner: str | None = ServeConfig.change_captioner
    generator: str | None = ServeConfig.generator
    device: str = ServeConfig.device
    precision: str = ServeConfig.precision
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    max_upload_mb: int = 20
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.captioner is not None and self.captioner.strip().lower() in ("", "none"):
            self.captioner = None
        if self.change_captioner is not None and self.change_captioner.strip().lower() in ("", "none"):
            self.change_captioner = None
        if self.generator is not None and self.generator.strip().lower() in ("", "none"):
            self.generator = None
        if self.images and self.index:
            raise ValueError("give image collections or an index, not both")
        if self.max_upload_mb < 1:
            raise ValueError(f"max_upload_mb must be >= 1, got {self.max_upload_mb}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
