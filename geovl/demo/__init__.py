"""The Gradio demo (``geovl demo``): natural-language search over a cached gallery, zero-shot classification and
GeoTIFF label maps, over the same serving resources as the HTTP API. Names resolve lazily (Gradio loads on use)."""

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "DemoConfig": "geovl.demo.config",
    "build_app": "geovl.demo.app",
    "launch": "geovl.demo.app",
    "prepare": "geovl.demo.app",
    "Gallery": "geovl.demo.gallery",
    "open_gallery": "geovl.demo.gallery",
    "DemoSearch": "geovl.demo.search",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
