"""The Gradio app of ``geovl demo``: natural-language search (the main tab), zero-shot classification, GeoTIFF
label maps, captions, change captions of image pairs and text-to-image generation, over one
:class:`~geovl.serving.resources.Resources` shared with the HTTP API.

Callbacks are a few lines over :class:`~geovl.demo.search.DemoSearch` and :mod:`geovl.demo.views`; a bad input is
shown in the page as a readable message (``gr.Error``), never a stack trace. The page loads no external fonts or
scripts, so it works offline.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from geovl.demo.change import DEFAULT_THRESHOLD, change_status, describe_change
from geovl.demo.config import DemoConfig
from geovl.demo.gallery import Gallery, default_collections, open_gallery, synthetic_collection
from geovl.demo.generate import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    EXAMPLE_PROMPTS,
    GSD_EXPONENTS,
    SAMPLER_CHOICES,
    generate_image,
    generate_status,
    gsd_caption,
)
from geovl.demo.search import COLUMN_LABELS, SHOWN_COLUMNS, DemoSearch, SearchView, hit_image
from geovl.demo.views import caption_image, class_scores, footprint_map, scene_label_map
from geovl.models.decoding import DECODING_METHODS, DecodingConfig
from geovl.serving.captioning import MAX_SERVED_BEAMS
from geovl.serving.config import ServeConfig
from geovl.serving.errors import ServiceError
from geovl.serving.resources import Resources

__all__ = ["DemoConfig", "build_app", "launch", "prepare", "serve"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Queries a first-time user can click.
EXAMPLE_QUERIES = (
    "a river crossing farmland",
    "an airport with planes on the runway",
    "dense residential area with many houses",
    "a harbour with boats",
    "a dense forest",
    "a highway interchange",
    "a beach next to the sea",
    "industrial buildings with large roofs",
)
BROWSER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def prepare(config: DemoConfig) -> DemoSearch:
    """Load the model once and open (embed and index on first use) the gallery."""
    serve_config = ServeConfig(model=config.model, device=config.device, precision=config.precision,
                               max_image_bytes=config.max_upload_mb * 1024 * 1024, captioner=config.captioner,
                               change_captioner=config.change_captioner, generator=config.generator)
    resources = Resources(serve_config)
    resources.start()
    gallery: Gallery
    if config.index:
        gallery = Gallery.from_index(config.index)
    else:
        collections = list(config.images) or default_collections() or [synthetic_collection(progress=config.progress)]
        gallery = open_gallery(resources.backbone, collections, progress=config.progress,
                               cache_root=Path(config.cache_dir) if config.cache_dir else None)
    logger.info("gallery: %d images (%s in %.1f s)", gallery.count, "built" if gallery.built else "cached",
                gallery.seconds)
    return DemoSearch(resources, gallery)


def _friendly(fn: F) -> F:
    """Show bad input as a message in the page instead of a stack trace."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ServiceError, ValueError, FileNotFoundError) as exc:
            raise gr.Error(getattr(exc, "message", None) or str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def _gallery_items(view: SearchView) -> list[tuple[Any, str]]:
    items: list[tuple[Any, str]] = []
    for hit in view.hits:
        plain = hit.path and Path(hit.path).suffix.lower() in BROWSER_IMAGE_SUFFIXES and "chip_id" not in hit.metadata
        items.append((hit.path if plain else hit_image(hit, max_side=256), hit.title))
    return items


def _details(view: SearchView | None, rank: int | None) -> str:
    """The selected hit's score, file and metadata (:data:`~geovl.demo.search.SHOWN_COLUMNS`; a caption written by
    ``geovl caption --attach-to`` next to an existing one is labelled as generated)."""
    if view is None or rank is None or rank >= len(view.hits):
        return "Select a hit to see why it matched and to find more like it."
    hit = view.hits[rank]
    rows = [f"**#{rank + 1}** · score {hit.score:.3f} · `{Path(hit.path).name if hit.path else hit.id}`"]
    for key in SHOWN_COLUMNS:
        value = hit.metadata.get(key)
        if value not in (None, ""):
            rows.append(f"- {COLUMN_LABELS.get(key, key)}: {value}")
    return "\n".join(rows)


class Callbacks:
    """The page's event handlers, each a few lines over :class:`DemoSearch` (tested without a browser)."""

    def __init__(self, search: DemoSearch) -> None:
        self.search = search

    def text(self, query: str, k: float, bbox: str, start: str, end: str, where: str) -> tuple[Any, ...]:
        view = self.search.text(query, int(k), self.search.filters(bbox, start, end, where))
        return self._show(view)

    def image(self, image: Any, k: float, bbox: str, start: str, end: str, where: str) -> tuple[Any, ...]:
        view = self.search.image(image, int(k), self.search.filters(bbox, start, end, where))
        return self._show(view)

    def similar(self, state: SearchView | None, rank: int | None, k: float, bbox: str, start: str, end: str,
                where: str) -> tuple[Any, ...]:
        if state is None or rank is None or rank >= len(state.hits):
            raise ServiceError("select a hit first, then ask for more like it")
        view = self.search.similar(state.hits[rank].id, int(k), self.search.filters(bbox, start, end, where))
        return self._show(view)

    def _show(self, view: SearchView) -> tuple[Any, ...]:
        if not view.hits:
            raise ServiceError("no image matches these filters; loosen them")
        import gradio as gr

        return (gr.update(value=_gallery_items(view), selected_index=None), f"<small>{view.latency_text}</small>",
                view, None, _details(view, None), None, footprint_map(view.hits))

    def select(self, state: SearchView | None, index: int) -> tuple[Any, ...]:
        """A hit was clicked: its details, the "why this hit" heat map and its footprint highlighted."""
        if state is None or not 0 <= index < len(state.hits):
            return None, _details(None, None), None, None
        from geovl.tasks.explain import overlay, similarity_map

        hit = state.hits[index]
        image = hit_image(hit)
        if max(image.size) < 320:  # small tiles (EuroSAT's 64 px) are enlarged so the map stays readable
            scale = 320 / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        heat = similarity_map(self.search.resources.backbone, image, state.query)
        return index, _details(state, index), overlay(image, heat), footprint_map(state.hits, index)

    def classify(self, image: Any, label_set: str, labels: str, multi: bool, threshold: float) -> dict[str, float]:
        scores = class_scores(self.search.resources, image, label_set, labels, multi_label=multi,
                              threshold=threshold, top_k=10)
        if multi and not scores:
            raise ServiceError(f"no class reaches the threshold {threshold:.2f}; lower it")
        return scores

    def caption(self, image: Any, method: str, beam_size: float, top_p: float, seed: float) -> tuple[str, str]:
        """The uploaded image's caption, and the model and settings that wrote it (Markdown)."""
        view = caption_image(self.search.resources, image, method=method, beam_size=beam_size, top_p=top_p,
                             seed=seed)
        return view.caption, view.summary

    def change(self, before: Any, after: Any, threshold: float | None) -> tuple[str, str, Image.Image]:
        """The uploaded pair's change caption, its verdict (Markdown) and the heat map drawn over the after image."""
        view = describe_change(self.search.resources, before, after, threshold=threshold)
        return view.caption, view.verdict, view.overlay

    def change_ready(self) -> tuple[Any, str]:
        """The Change tab was opened: load the change captioner, set the slider to its threshold and name it, or
        say in the tab why it cannot be used."""
        import gradio as gr

        threshold, status = change_status(self.search.resources)
        return (gr.update() if threshold is None else gr.update(value=threshold)), status

    def generate(self, prompt: str, log2_gsd: float, no_gsd: bool, steps: float, guidance: float,
                 guidance_resolution: float, seed: float | None, width: float, height: float,
                 sampler: str) -> tuple[Image.Image, dict[str, Any], str]:
        """The generated image, its settings (JSON) and a summary line (Markdown)."""
        view = generate_image(self.search.resources, prompt, log2_gsd=log2_gsd, no_gsd=no_gsd, steps=steps,
                              guidance=guidance, guidance_resolution=guidance_resolution, seed=seed, width=width,
                              height=height, sampler=sampler)
        return view.image, view.settings, view.summary

    def generate_ready(self) -> tuple[Any, Any, Any, str]:
        """The Generate tab was opened: load the generator, set steps and guidance to its defaults and name it, or
        say in the tab why it cannot be used."""
        import gradio as gr

        defaults, status = generate_status(self.search.resources)
        if defaults is None:
            return gr.update(), gr.update(), gr.update(), status
        return (gr.update(value=defaults["steps"]), gr.update(value=defaults["guidance"]),
                gr.update(value=defaults["guidance"]), status)

    def scene(self, scene: Any, label_set: str, labels: str, chip_size: float) -> tuple[Any, ...]:
        view = scene_label_map(self.search.resources, scene, label_set, labels, chip_size=int(chip_size))
        legend = "\n".join(f"- <span style='color:{c}'>■</span> {name}: {n} chips" for name, n, c in view.legend)
        return view.overlay, f"{view.summary}\n\n{legend}", view.files


def build_app(search: DemoSearch) -> Any:
    """The ``gr.Blocks`` app over a prepared search (see :func:`prepare`)."""
    import gradio as gr

    calls = Callbacks(search)
    with gr.Blocks(title="geovl demo") as app:
        gr.Markdown(f"## geovl · remote-sensing search\n{len(search):,} images · model `{search.resources.model_name}`")
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                _search_tab(gr, calls, search)
            with gr.Tab("Classify", id="classify"):
                _classify_tab(gr, calls)
            with gr.Tab("Map a scene", id="scene"):
                _scene_tab(gr, calls)
            if search.resources.config.captioner:
                with gr.Tab("Caption", id="caption"):
                    _caption_tab(gr, calls)
            if search.resources.config.change_captioner:
                with gr.Tab("Change", id="change") as tab:
                    _change_tab(gr, calls, tab)
            if search.resources.config.generator:
                with gr.Tab("Generate", id="generate") as tab:
                    _generate_tab(gr, calls, tab)
    return app


def _search_tab(gr: Any, calls: Callbacks, search: DemoSearch) -> None:
    with gr.Row():
        query = gr.Textbox(label="Describe what to find", placeholder="e.g. a river crossing farmland", scale=5,
                           elem_id="query", autofocus=True)
        k = gr.Slider(1, 48, value=12, step=1, label="hits", scale=1, elem_id="k")
        go = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
    with gr.Accordion("Search with an image", open=False):
        upload = gr.Image(type="filepath", label="query image", height=200, elem_id="image-query")
        go_image = gr.Button("Search with this image", elem_id="image-search-button")
    with gr.Accordion("Filters", open=False):
        bbox = gr.Textbox(label="bounding box: west,south,east,north (degrees)", visible=search.georeferenced)
        with gr.Row(visible=search.timed):
            start = gr.Textbox(label="from (YYYY-MM-DD)")
            end = gr.Textbox(label="to (YYYY-MM-DD)")
        where = gr.Textbox(label="metadata conditions, separated by ';'", elem_id="where",
                           placeholder=f"e.g. label = Forest; split = test   (columns: {', '.join(search.columns)})")
    gr.Examples([[q] for q in EXAMPLE_QUERIES], inputs=[query], label="Try")
    latency = gr.Markdown(elem_id="latency")
    state, selected = gr.State(None), gr.State(None)
    with gr.Row():
        results = gr.Gallery(label="hits", columns=4, height=560, allow_preview=False, elem_id="results", scale=3)
        with gr.Column(scale=2):
            details = gr.Markdown(_details(None, None), elem_id="hit-details")
            heat = gr.Image(label="why this hit: the query's similarity to each patch", elem_id="heatmap",
                            interactive=False, height=260)
            more = gr.Button("More like this", elem_id="more-like-this")
            footprints = gr.Plot(label="footprints", visible=search.georeferenced)
    filters = [bbox, start, end, where]
    shown = [results, latency, state, selected, details, heat, footprints]
    for event in (go.click, query.submit):
        event(_friendly(calls.text), [query, k, *filters], shown, api_name="search" if event == go.click else False)
    go_image.click(_friendly(calls.image), [upload, k, *filters], shown, api_name="search_image")
    more.click(_friendly(calls.similar), [state, selected, k, *filters], shown, api_name=False)

    def on_select(view: SearchView | None, evt: gr.SelectData) -> tuple[Any, ...]:
        return calls.select(view, int(evt.index))

    # Gradio passes the clicked index only to a parameter whose type hint resolves to SelectData; the string
    # annotation "gr.SelectData" does not resolve ("gr" is not a module global), so give it the class itself
    on_select.__annotations__["evt"] = gr.SelectData

    results.select(_friendly(on_select), [state], [selected, details, heat, footprints], api_name=False)


def _classes_inputs(gr: Any, default_set: str) -> tuple[Any, Any]:
    from geovl.data.labelsets import LABEL_SETS

    label_set = gr.Dropdown(["custom", *LABEL_SETS], value=default_set, label="label set", elem_id="label-set")
    labels = gr.Textbox(label="your own classes (comma-separated; with a label set: a subset of it)",
                        placeholder="e.g. forest, river, farmland, residential area", elem_id="labels")
    return label_set, labels


def _classify_tab(gr: Any, calls: Callbacks) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", label="image", height=300, elem_id="classify-image")
            label_set, labels = _classes_inputs(gr, "nwpu-resisc45")
            with gr.Row():
                multi = gr.Checkbox(label="multi-label (every class whose own score passes the threshold)")
                threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="threshold")
            go = gr.Button("Classify", variant="primary", elem_id="classify-button")
        out = gr.Label(num_top_classes=10, label="class scores", elem_id="classify-output")
    go.click(_friendly(calls.classify), [image, label_set, labels, multi, threshold], out, api_name="classify")


def _scene_tab(gr: Any, calls: Callbacks) -> None:
    gr.Markdown("Upload a GeoTIFF scene: it is cut into chips and each chip gets a class, drawn over the scene "
                "(what `geovl classify-scene` writes).")
    with gr.Row():
        with gr.Column():
            scene = gr.File(label="GeoTIFF scene", file_types=[".tif", ".tiff"], type="filepath", elem_id="scene")
            label_set, labels = _classes_inputs(gr, "eurosat")
            chip = gr.Slider(16, 512, value=64, step=16, label="chip size (scene pixels)")
            go = gr.Button("Map the scene", variant="primary", elem_id="scene-button")
        with gr.Column():
            overlay = gr.Image(label="label map", interactive=False, elem_id="scene-map")
            legend = gr.Markdown()
            files = gr.File(label="label map GeoTIFF, chip footprints GeoJSON, class table", file_count="multiple")
    go.click(_friendly(calls.scene), [scene, label_set, labels, chip], [overlay, legend, files], api_name="map_scene")


def _caption_tab(gr: Any, calls: Callbacks) -> None:
    defaults = DecodingConfig()
    gr.Markdown("Upload an image: the captioner describes it in a sentence (what `geovl caption` writes). The "
                "captioner loads on the first caption.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", label="image", height=300, elem_id="caption-image")
            method = gr.Radio(list(DECODING_METHODS), value=defaults.method, label="decoding", elem_id="caption-method",
                              info="greedy: the likeliest word each step; beam: beam search; nucleus: sampling")
            with gr.Row():
                beams = gr.Slider(1, MAX_SERVED_BEAMS, value=defaults.beam_size, step=1, label="beam size (beam)")
                top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="top-p (nucleus)")
                seed = gr.Number(value=defaults.seed, precision=0, minimum=0, label="seed (nucleus)")
            go = gr.Button("Caption", variant="primary", elem_id="caption-button")
        with gr.Column():
            caption = gr.Textbox(label="caption", interactive=False, lines=3, elem_id="caption-output")
            info = gr.Markdown(elem_id="caption-model")
    go.click(_friendly(calls.caption), [image, method, beams, top_p, seed], [caption, info], api_name="caption")


def _change_tab(gr: Any, calls: Callbacks, tab: Any) -> None:
    changes = calls.search.resources.changes
    gr.Markdown("Upload two images of the same place, an earlier and a later one: the change captioner says whether "
                "it changed, what changed, and where (the heat map over the after image). It loads when this tab is "
                "first opened.")
    status = gr.Markdown(elem_id="change-model")
    with gr.Row():
        before = gr.Image(type="filepath", label="before", height=260, elem_id="change-before")
        after = gr.Image(type="filepath", label="after", height=260, elem_id="change-after")
    threshold = gr.Slider(0.0, 1.0, value=changes.model().threshold if changes.loaded else DEFAULT_THRESHOLD,
                          step=0.01, label="threshold: P(changed) at or above which the pair is changed",
                          info="set to the model's calibrated threshold when it loads", elem_id="change-threshold")
    go = gr.Button("Describe the change", variant="primary", elem_id="change-button")
    with gr.Row():
        with gr.Column():
            caption = gr.Textbox(label="change caption", interactive=False, lines=2, elem_id="change-caption")
            verdict = gr.Markdown(elem_id="change-verdict")
        heat = gr.Image(label="where: change heat map over the after image", interactive=False, height=320,
                        elem_id="change-heatmap")
    tab.select(calls.change_ready, None, [threshold, status], api_name=False)
    go.click(_friendly(calls.change), [before, after, threshold], [caption, verdict, heat], api_name="change_caption")


def _generate_tab(gr: Any, calls: Callbacks, tab: Any) -> None:
    config = calls.search.resources.config
    gr.Markdown("Describe a scene and pick its ground sample distance: the generator draws it (what `geovl generate` "
                "writes; the same settings and seed give the same image). Sizes above one tile are seamless tiled "
                "scenes. The generator loads when this tab is first opened.")
    status = gr.Markdown(elem_id="generate-model")
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="prompt", placeholder="e.g. a river through farmland", elem_id="generate-prompt")
            low, high, start = GSD_EXPONENTS
            with gr.Row():
                gsd = gr.Slider(low, high, value=start, step=1, elem_id="generate-gsd", scale=3,
                                label="GSD: 2^x metres per pixel (-1: 0.5 m … 7: 128 m)")
                no_gsd = gr.Checkbox(label="no resolution condition", elem_id="generate-no-gsd", scale=1)
            gsd_text = gr.Markdown(gsd_caption(start), elem_id="generate-gsd-text")
            with gr.Row():
                steps = gr.Slider(1, config.max_generation_steps, value=min(DEFAULT_STEPS, config.max_generation_steps),
                                  step=1, label="steps", elem_id="generate-steps")
                sampler = gr.Dropdown(list(SAMPLER_CHOICES), value="ddpm", label="sampler",
                                      elem_id="generate-sampler")
            with gr.Row():
                guidance = gr.Slider(0, 15, value=DEFAULT_GUIDANCE, step=0.5, label="text guidance",
                                     elem_id="generate-guidance")
                guidance_res = gr.Slider(0, 15, value=DEFAULT_GUIDANCE, step=0.5, label="resolution guidance",
                                         elem_id="generate-guidance-resolution")
            with gr.Row():
                side = min(512, config.max_generation_side)
                width = gr.Slider(64, side, value=64, step=64, label="width (px)", elem_id="generate-width")
                height = gr.Slider(64, side, value=64, step=64, label="height (px)", elem_id="generate-height")
                seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="generate-seed")
            go = gr.Button("Generate", variant="primary", elem_id="generate-button")
            gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Try")
        with gr.Column():
            image = gr.Image(label="generated image", type="pil", interactive=False, elem_id="generate-image")
            summary = gr.Markdown(elem_id="generate-summary")
            settings = gr.JSON(label="settings (stored in the PNG's text chunks by geovl generate)",
                               elem_id="generate-settings")
    for control in (gsd, no_gsd):
        control.change(gsd_caption, [gsd, no_gsd], gsd_text, api_name=False)
    tab.select(calls.generate_ready, None, [steps, guidance, guidance_res, status], api_name=False)
    inputs = [prompt, gsd, no_gsd, steps, guidance, guidance_res, seed, width, height, sampler]
    go.click(_friendly(calls.generate), inputs, [image, settings, summary], api_name="generate")


def _theme() -> Any:
    """The default theme with local fonts only, so the page makes no request outside this machine."""
    import gradio as gr

    local = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=local, font_mono=["ui-monospace", "monospace"])


def serve(search: DemoSearch, config: DemoConfig) -> tuple[Any, str]:
    """Build the app over a prepared search and serve it in a thread; returns ``(app, local URL)``. The caller stops
    it: ``app.close()``, then ``search.resources.close()``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(search)
    roots = {str(Path(c.partition(":")[2] or c).resolve().parent) for c in search.gallery.collections}
    roots |= {str(Path(c).resolve()) for c in search.gallery.collections if Path(c).is_dir()}
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=config.host, server_port=config.port, share=config.share,
               max_file_size=f"{config.max_upload_mb}mb", allowed_paths=sorted(roots), prevent_thread_lock=True,
               quiet=True, theme=_theme(), show_error=False)
    return app, str(app.local_url)


def launch(config: DemoConfig, *, block: bool = True) -> tuple[Any, str]:
    """Prepare the gallery, build the app and serve it until interrupted; returns ``(app, local URL)``
    (``block=False`` returns at once, the server running in a thread; a caller that must stop it cleanly calls
    :func:`prepare` and :func:`serve` itself, then closes both the app and ``search.resources``)."""
    search = prepare(config)
    try:
        app, url = serve(search, config)
    except BaseException:
        search.resources.close()
        raise
    print(f"geovl demo: {len(search):,} images, model {search.resources.model_name}; open {url}", flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            search.resources.close()
    return app, url
