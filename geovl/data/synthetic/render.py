"""Turn a :class:`~geovl.data.synthetic.layout.Layout` into an RGB tile (and optionally an element-id map).

Order: ground areas (procedural materials), paint and foam, cast shadows, raised objects, then the sensor:
a small blur (point-spread function), per-channel gain, haze and noise. Every random number comes from seeds
stored in the layout, so rendering is a pure function of it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from geovl.data.synthetic.geometry import Point, local_to_px, rect_corners
from geovl.data.synthetic.layout import Layout, Obj, Shape
from geovl.data.synthetic.materials import MATERIALS, MaterialContext
from geovl.data.synthetic.noise import soften, value_noise
from geovl.data.synthetic.palette import RGB, scale

#: Fraction of direct light that a cast shadow removes.
SHADOW_STRENGTH = 0.5


def _ink(colour: RGB) -> tuple[int, int, int]:
    return (int(colour[0] + 0.5), int(colour[1] + 0.5), int(colour[2] + 0.5))


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, fill: int | tuple[int, int, int]) -> None:
    """Rasterise ``shape`` with ``fill`` (an int for id / mask images, an RGB triple for colour images)."""
    if shape.kind == "full":
        draw.rectangle((-1, -1, 100_000, 100_000), fill=fill)
    elif shape.kind == "polygon":
        draw.polygon(shape.points, fill=fill)
    elif shape.kind == "line":
        w = max(1, round(shape.width))
        draw.line(shape.points, fill=fill, width=w, joint="curve")
        if w >= 3:
            r = shape.width / 2.0
            for x, y in (shape.points[0], shape.points[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape.kind == "ellipse":
        (x0, y0), (x1, y1) = shape.points
        draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))


def _sun(layout: Layout) -> tuple[float, float]:
    return (math.cos(layout.sun_azimuth), math.sin(layout.sun_azimuth))


def shadow_offset(layout: Layout, height_m: float) -> tuple[float, float]:
    """Pixel offset of the shadow cast by a point ``height_m`` metres above the ground."""
    length = height_m / math.tan(layout.sun_elevation) / layout.gsd
    sx, sy = _sun(layout)
    return (-sx * length, -sy * length)


# ---------------------------------------------------------------------------------------------------- ground


def _render_ground(layout: Layout, ids: np.ndarray) -> np.ndarray:
    h, w = layout.height, layout.width
    n = layout.next_uid
    materials: list[str] = []
    mat_lut = np.full(n, -1, np.int32)
    col_a = np.zeros((n, 3), np.float32)
    col_b = np.zeros((n, 3), np.float32)
    for area in layout.areas:
        if area.material not in MATERIALS:
            raise ValueError(f"unknown material {area.material!r}; known: {sorted(MATERIALS)}")
        if area.material not in materials:
            materials.append(area.material)
        mat_lut[area.uid] = materials.index(area.material)
        col_a[area.uid] = area.colour_a
        col_b[area.uid] = area.colour_b
    areas_by_uid = {a.uid: a for a in layout.areas}

    def lut(key: str, default: float) -> np.ndarray:
        table = np.full(n, default, np.float32)
        for uid, area in areas_by_uid.items():
            if key in area.params:
                table[uid] = area.params[key]
        return table[ids]

    mat_map = mat_lut[ids]
    mix = np.zeros((h, w), np.float32)
    shade = np.ones((h, w), np.float32)
    for k, name in enumerate(materials):
        sel = mat_map == k
        if not sel.any():
            continue
        ctx = MaterialContext(
            height=h, width=w, gsd=layout.gsd, rng=_rng(layout.texture_seed, name), sun=_sun(layout),
            params=layout.material_params.get(name, {}), lut=lut,
        )
        m, s = MATERIALS[name](ctx)
        if len(materials) == 1:
            mix, shade = m, s
        else:
            mix = np.where(sel, m, mix)
            shade = np.where(sel, s, shade)
    mix = np.clip(mix, 0.0, 1.0)[..., None]
    a = col_a[ids]
    img = (a + (col_b[ids] - a) * mix) * shade[..., None]
    return img.astype(np.float32, copy=False)


def _render_paints(layout: Layout, img: np.ndarray) -> np.ndarray:
    groups: dict[tuple[int, int, int], tuple[Image.Image, ImageDraw.ImageDraw]] = {}
    for paint in layout.paints:
        key = _ink(paint.colour)
        if key not in groups:
            mask = Image.new("L", (layout.width, layout.height), 0)
            groups[key] = (mask, ImageDraw.Draw(mask))
        draw_shape(groups[key][1], paint.shape, round(255 * paint.opacity))
    for colour, (mask_img, _) in groups.items():
        m = np.asarray(mask_img, np.float32)[..., None] * np.float32(1 / 255)
        img = img + (np.asarray(colour, np.float32) - img) * m
    return img


# ---------------------------------------------------------------------------------------------------- objects


def _box_shadow(layout: Layout, o: Obj) -> list[list[Point]]:
    sx, sy = shadow_offset(layout, o.height_m)
    return sweep(rect_corners(o.x, o.y, o.length, o.width, o.angle), sx, sy)


def sweep(corners: list[Point], dx: float, dy: float) -> list[list[Point]]:
    """Polygons whose union is the region swept by ``corners`` moved by ``(dx, dy)`` (a prism's shadow).

    Cheaper than a convex hull: the moved polygon plus one quad per edge; for shadows under a pixel only the
    moved polygon.
    """
    moved = [(x + dx, y + dy) for x, y in corners]
    if abs(dx) + abs(dy) < 1.0:
        return [moved]
    quads = [[corners[i - 1], corners[i], moved[i], moved[i - 1]] for i in range(len(corners))]
    return [moved, *quads]


def _round_shadow(layout: Layout, o: Obj) -> list[list[Point]]:
    sx, sy = shadow_offset(layout, o.height_m)
    r = o.length / 2.0
    pts: list[list[Point]] = []
    for t in (0.35, 0.7, 1.0):
        cx, cy = o.x + sx * t, o.y + sy * t
        k = r * (0.6 + 0.4 * t)
        pts.append([(cx - k, cy - k), (cx + k, cy + k)])
    return pts


def _airplane_outline(o: Obj) -> list[Point]:
    length, span = o.length, o.width
    f = 0.05 * length
    half = [
        (0.5 * length, 0.0), (0.44 * length, f), (0.14 * length, f), (-0.06 * length, 0.5 * span),
        (-0.13 * length, 0.5 * span), (-0.04 * length, f), (-0.36 * length, f * 0.8),
        (-0.44 * length, 0.17 * span), (-0.5 * length, 0.17 * span), (-0.47 * length, 0.0),
    ]
    outline = half + [(u, -v) for u, v in reversed(half[1:-1])]
    return local_to_px(o.x, o.y, o.angle, outline)


def _boat_outline(o: Obj) -> list[Point]:
    hl, hw = o.length / 2.0, o.width / 2.0
    pts = [(hl, 0.0), (hl * 0.4, hw), (-hl, hw * 0.85), (-hl, -hw * 0.85), (hl * 0.4, -hw)]
    return local_to_px(o.x, o.y, o.angle, pts)


def _shadow_polys(layout: Layout, o: Obj) -> list[list[Point]]:
    if o.height_m <= 0:
        return []
    if o.kind in ("tank", "tree", "umbrella", "shrub"):
        return _round_shadow(layout, o)
    if o.kind == "airplane":
        sx, sy = shadow_offset(layout, o.height_m)
        return [[(x + sx, y + sy) for x, y in _airplane_outline(o)]]
    if o.kind == "boat":
        sx, sy = shadow_offset(layout, o.height_m)
        return [[(x + sx, y + sy) for x, y in _boat_outline(o)]]
    return _box_shadow(layout, o)


def _facet(draw: ImageDraw.ImageDraw, o: Obj, pts: list[Point], normal: tuple[float, float],
           sun: tuple[float, float], colour: RGB) -> None:
    c, s = math.cos(o.angle), math.sin(o.angle)
    nx, ny = c * normal[0] - s * normal[1], s * normal[0] + c * normal[1]
    light = 1.0 + 0.3 * (nx * sun[0] + ny * sun[1])
    draw.polygon(local_to_px(o.x, o.y, o.angle, pts), fill=_ink(scale(colour, light)))


def _draw_building(draw: ImageDraw.ImageDraw, o: Obj, sun: tuple[float, float]) -> None:
    hl, hw = o.length / 2.0, o.width / 2.0
    if o.style == "gable" and o.width >= 3:
        _facet(draw, o, [(-hl, -hw), (hl, -hw), (hl, 0), (-hl, 0)], (0.0, -1.0), sun, o.colour)
        _facet(draw, o, [(-hl, 0), (hl, 0), (hl, hw), (-hl, hw)], (0.0, 1.0), sun, o.colour)
    elif o.style == "hip" and o.width >= 3:
        r = max(0.0, hl - hw)
        _facet(draw, o, [(-hl, -hw), (hl, -hw), (r, 0), (-r, 0)], (0.0, -1.0), sun, o.colour)
        _facet(draw, o, [(-r, 0), (r, 0), (hl, hw), (-hl, hw)], (0.0, 1.0), sun, o.colour)
        _facet(draw, o, [(hl, -hw), (hl, hw), (r, 0)], (1.0, 0.0), sun, o.colour)
        _facet(draw, o, [(-hl, -hw), (-r, 0), (-hl, hw)], (-1.0, 0.0), sun, o.colour)
    elif o.style == "sawtooth" and o.length >= 12:
        n = max(2, int(o.length / 6))
        step = o.length / n
        for i in range(n):
            u0 = -hl + i * step
            _facet(draw, o, [(u0, -hw), (u0 + step * 0.6, -hw), (u0 + step * 0.6, hw), (u0, hw)],
                   (1.0, 0.0), sun, o.colour)
            _facet(draw, o, [(u0 + step * 0.6, -hw), (u0 + step, -hw), (u0 + step, hw), (u0 + step * 0.6, hw)],
                   (-1.0, 0.0), sun, o.colour)
    else:
        corners = rect_corners(o.x, o.y, o.length, o.width, o.angle)
        if min(o.length, o.width) >= 8:
            draw.polygon(corners, fill=_ink(scale(o.colour, 0.82)))
            inset = max(1.0, 0.06 * min(o.length, o.width))
            inner = rect_corners(o.x, o.y, o.length - 2 * inset, o.width - 2 * inset, o.angle)
            draw.polygon(inner, fill=_ink(o.colour))
        else:
            draw.polygon(corners, fill=_ink(o.colour))


def _draw_round(draw: ImageDraw.ImageDraw, o: Obj, sun: tuple[float, float]) -> None:
    r = o.length / 2.0
    draw.ellipse((o.x - r, o.y - r, o.x + r, o.y + r), fill=_ink(o.colour))
    if r < 1.5:
        return
    if o.kind == "tank":
        k = r * 0.8
        draw.ellipse((o.x - k, o.y - k, o.x + k, o.y + k), fill=_ink(scale(o.colour, 0.93)))
        k = max(0.5, r * 0.12)
        draw.ellipse((o.x - k, o.y - k, o.x + k, o.y + k), fill=_ink(scale(o.colour, 0.8)))
    else:
        k = r * 0.55
        cx, cy = o.x + sun[0] * r * 0.3, o.y + sun[1] * r * 0.3
        draw.ellipse((cx - k, cy - k, cx + k, cy + k), fill=_ink(scale(o.colour, 1.22)))


def _draw_car(draw: ImageDraw.ImageDraw, o: Obj, sun: tuple[float, float]) -> None:
    if o.length < 1.5:
        draw.point((o.x, o.y), fill=_ink(o.colour))
        return
    draw.polygon(rect_corners(o.x, o.y, o.length, o.width, o.angle), fill=_ink(o.colour))
    if o.length >= 6:
        dark = (38.0, 42.0, 48.0)
        c, s = math.cos(o.angle), math.sin(o.angle)
        for u, t in ((0.2, 0.16), (-0.3, 0.1)):
            cx, cy = o.x + c * u * o.length, o.y + s * u * o.length
            draw.polygon(rect_corners(cx, cy, t * o.length, o.width * 0.8, o.angle), fill=_ink(dark))


def _draw_airplane(draw: ImageDraw.ImageDraw, o: Obj, sun: tuple[float, float]) -> None:
    draw.polygon(_airplane_outline(o), fill=_ink(o.colour))


def _draw_boat(draw: ImageDraw.ImageDraw, o: Obj, sun: tuple[float, float]) -> None:
    draw.polygon(_boat_outline(o), fill=_ink(o.colour))
    if o.length >= 10:
        draw.polygon(rect_corners(o.x, o.y, o.length * 0.3, o.width * 0.5, o.angle),
                     fill=_ink(scale(o.colour, 0.85)))


def _draw_pool(draw: ImageDraw.ImageDraw, o: Obj, sun: tuple[float, float]) -> None:
    draw.polygon(rect_corners(o.x, o.y, o.length + 2, o.width + 2, o.angle), fill=(205, 205, 200))
    draw.polygon(rect_corners(o.x, o.y, o.length, o.width, o.angle), fill=_ink(o.colour))


_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, Obj, tuple[float, float]], None]] = {
    "building": _draw_building,
    "tank": _draw_round,
    "tree": _draw_round,
    "shrub": _draw_round,
    "umbrella": _draw_round,
    "car": _draw_car,
    "airplane": _draw_airplane,
    "boat": _draw_boat,
    "pool": _draw_pool,
}


def _object_footprint(draw: ImageDraw.ImageDraw, o: Obj, fill: int) -> None:
    if o.kind in ("tank", "tree", "shrub", "umbrella"):
        r = o.length / 2.0
        draw.ellipse((o.x - r, o.y - r, o.x + r, o.y + r), fill=fill)
    elif o.kind == "airplane":
        draw.polygon(_airplane_outline(o), fill=fill)
    elif o.length < 1.5 and o.kind == "car":
        draw.point((o.x, o.y), fill=fill)
    else:
        draw.polygon(rect_corners(o.x, o.y, o.length, o.width, o.angle), fill=fill)


# ---------------------------------------------------------------------------------------------------- entry


def render_ids(layout: Layout) -> np.ndarray:
    """int32 ``(H, W)`` map of the top-most element id per pixel (areas, then object footprints); cheap."""
    id_img = Image.new("I", (layout.width, layout.height), 0)
    id_draw = ImageDraw.Draw(id_img)
    for area in layout.areas:
        draw_shape(id_draw, area.shape, area.uid)
    for o in layout.objects:
        _object_footprint(id_draw, o, o.uid)
    return np.array(id_img, dtype=np.int32)


def render(layout: Layout, *, with_ids: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Render ``layout``.

    Returns:
        ``(image, ids)``: the tile as uint8 ``(H, W, 3)``, and with ``with_ids`` an int32 ``(H, W)`` map of the
        top-most element id per pixel (areas, then objects), else ``None``.
    """
    h, w = layout.height, layout.width
    id_img = Image.new("I", (w, h), 0)
    id_draw = ImageDraw.Draw(id_img)
    for area in layout.areas:
        draw_shape(id_draw, area.shape, area.uid)
    ids = np.asarray(id_img)
    img = _render_ground(layout, ids)
    if layout.paints:
        img = _render_paints(layout, img)

    sun = _sun(layout)
    if layout.objects:
        shadow = Image.new("L", (w, h), 0)
        sdraw = ImageDraw.Draw(shadow)
        for o in layout.objects:
            for poly in _shadow_polys(layout, o):
                if len(poly) == 2:
                    sdraw.ellipse((poly[0][0], poly[0][1], poly[1][0], poly[1][1]), fill=255)
                elif len(poly) >= 3:
                    sdraw.polygon(poly, fill=255)
        m = np.asarray(shadow, np.float32)[..., None] * np.float32(SHADOW_STRENGTH / 255)
        img = img * (1.0 - m)
        rgb = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(rgb)
        for o in layout.objects:
            _DRAWERS[o.kind](draw, o, sun)
        img = np.asarray(rgb, np.float32)

    img = soften(img)
    rad = layout.radiometry
    noise_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([rad.noise_seed, 7])))
    # Grime: low-contrast metre-scale variation over everything (roofs and roads are not perfectly uniform).
    grime = np.float32(0.95) + np.float32(0.1) * value_noise(noise_rng, h, w, max(1.0, 3.0 / layout.gsd))
    # Gain, grime and haze in one multiply-add: img * gain * grime * (1 - haze) + haze * haze_colour.
    gain = np.asarray(rad.gain, np.float32) * np.float32(1.0 - rad.haze)
    offset = np.float32(rad.haze) * np.asarray(rad.haze_colour, np.float32)
    img = img * (grime[..., None] * gain) + offset
    if rad.noise_std > 0:
        # Sum of two uniform bytes is triangular noise (std ~104): cheaper than Gaussian, looks the same.
        raw = np.frombuffer(noise_rng.bytes(h * w * 4), np.uint8).reshape(h, w, 4).astype(np.float32)
        noise = raw[..., :3] + raw[..., 3:] - np.float32(255.0)
        img = img + noise * np.float32(rad.noise_std / 104.0)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    return image, (render_ids(layout) if with_ids else None)
