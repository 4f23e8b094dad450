"""Recipes for built-up scenes: dense and sparse residential, industrial, highway, airport and parking lot.

Buildings, cars and airplanes are sized in metres and converted with the ground sample distance, so a house is
~25 px at 0.4 m/px and a couple of pixels at 5 m/px. Counts of drawn objects go into ``layout.features`` so
captions can state them exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from geovl.data.synthetic import palette
from geovl.data.synthetic.builder import MIN_OBJECT_PX, SceneBuilder
from geovl.data.synthetic.geometry import blob, direction_phrase, region_word
from geovl.data.synthetic.landscapes import fill_background, fill_grass
from geovl.data.synthetic.layout import Shape

Block = tuple[float, float, float, float]  # u0, v0, u1, v1 in px of the rotated frame

_ROOF_WORDS = {"red": "red", "orange": "red", "grey": "grey", "dark": "dark", "white": "white", "blue": "blue",
               "brown": "brown"}


def street_grid(b: SceneBuilder, block_m: tuple[float, float], street_m: tuple[float, float],
                one_way: bool = False) -> list[Block]:
    """Draw a rotated street grid (only parallel streets when ``one_way``); returns the interior rectangles of
    the blocks that reach into the tile, in the rotated frame."""
    pu, pv = b.px(b.uniform(*block_m)), b.px(b.uniform(*block_m))
    sw = b.px(b.uniform(*street_m))
    colour = b.colour("asphalt")
    # Blocks smaller than a few pixels: widen them (keeps the polygon count bounded at very coarse gsd).
    pu, pv = max(pu, min(b.w, b.h) / 40.0), max(pv, min(b.w, b.h) / 40.0)

    def street(points: list[tuple[float, float]]) -> None:
        if sw >= 1.5:
            b.area("asphalt", Shape("line", points, sw), colour, None, block=True)
        else:  # sub-pixel streets are drawn as faint lines instead of blocking areas
            b.paint(0, Shape("line", points, sw), colour, 0.9)

    if one_way:
        ext = b.half_diag + pv
        us = [-ext, ext]  # no cross streets: one long block between each pair of parallel streets
    else:
        ext = b.half_diag + max(pu, pv)
        off_u = b.uniform(0, pu)
        us = [-ext + off_u + k * pu for k in range(int(2 * ext / pu) + 2)]
        for u in us:
            street([b.local(u, -ext), b.local(u, ext)])
    off_v = b.uniform(0, pv)
    vs = [-ext + off_v + k * pv for k in range(int(2 * ext / pv) + 2)]
    for v in vs:
        street([b.local(-ext, v), b.local(ext, v)])
    blocks: list[Block] = []
    for u0, u1 in itertools.pairwise(us):
        for v0, v1 in itertools.pairwise(vs):
            blk = (u0 + sw / 2, v0 + sw / 2, u1 - sw / 2, v1 - sw / 2)
            poly = b.local_rect(*blk)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            if max(xs) >= 0 and min(xs) <= b.w and max(ys) >= 0 and min(ys) <= b.h:
                blocks.append(blk)
    b.layout.facts["street_px"] = sw
    return blocks


def _roofs(b: SceneBuilder, dense: bool) -> tuple[list[str], list[float]]:
    options = ["red", "grey", "dark", "white", "brown", "orange", "blue"]
    base = [0.3, 0.25, 0.12, 0.1 if dense else 0.05, 0.12, 0.08, 0.03]
    k = b.integer(1, 3)
    picked = sorted({b.choice(options, base) for _ in range(k)})
    weights = [b.uniform(0.3, 1.0) for _ in picked]
    return picked, weights


#: Below this house size (px) settlements are drawn as a built-up texture instead of individual buildings.
MIN_HOUSE_PX = 2.5


def _urban_blocks(b: SceneBuilder, blocks: list[Block], roofs: tuple[list[str], list[float]], dense: bool,
                  roof_counts: dict[str, int]) -> int:
    """Fill blocks with the "urban" texture; returns the estimated number of buildings in visible blocks."""
    coverage, house_m2 = (0.4, 160.0) if dense else (0.15, 130.0)
    ground = b.colour("concrete") if dense else b.colour("grass")
    b.layout.material_params["urban"] = {"building_m": 14.0 if dense else 18.0}
    estimate = 0
    for u0, v0, u1, v1 in blocks:
        roof = b.choice(*roofs)
        b.area("urban", Shape("polygon", b.local_rect(u0, v0, u1, v1)), ground, b.colour(f"roof/{roof}"),
               {"density": coverage * b.uniform(0.8, 1.2)})
        cx, cy = b.local((u0 + u1) / 2, (v0 + v1) / 2)
        if b.inside(cx, cy):
            n = round((u1 - u0) * (v1 - v0) * b.gsd**2 * coverage / house_m2)
            estimate += n
            roof_counts[_ROOF_WORDS[roof]] = roof_counts.get(_ROOF_WORDS[roof], 0) + n
    b.layout.facts["buildings_drawn_as_texture"] = True
    return estimate


def _edge_buildings(b: SceneBuilder, blk: Block, roofs: tuple[list[str], list[float]], dense: bool,
                    roof_counts: dict[str, int]) -> None:
    u0, v0, u1, v1 = blk
    rot = b.layout.rotation
    if dense:
        front, depth, gap, setback = (8.0, 22.0), (9.0, 16.0), (0.5, 3.0), (0.5, 3.0)
    else:
        front, depth, gap, setback = (9.0, 16.0), (8.0, 13.0), (8.0, 22.0), (5.0, 12.0)
    dmax = b.px(depth[1] + setback[1])
    edges = [  # (start, end, fixed coordinate, inward sign, along u?)
        (u0, u1, v0, 1.0, True), (u0, u1, v1, -1.0, True),
        (v0 + dmax, v1 - dmax, u0, 1.0, False), (v0 + dmax, v1 - dmax, u1, -1.0, False),
    ]
    for start, end, fixed, inward, along_u in edges:
        t = start + b.px(b.uniform(0, gap[1]))
        while True:
            f, d = b.px(b.uniform(*front)), b.px(b.uniform(*depth))
            if t + f > end:
                break
            s = b.px(b.uniform(*setback))
            mid, across = t + f / 2, fixed + inward * (s + d / 2)
            x, y = b.local(mid, across) if along_u else b.local(across, mid)
            t += f + b.px(b.uniform(*gap))
            if not b.inside(x, y, -f):
                continue
            if not dense and not b.coin(0.85):
                continue
            roof = b.choice(*roofs)
            angle = rot if along_u else rot + math.pi / 2
            height = b.uniform(6, 22) if dense else b.uniform(4, 8)
            o = b.house(x, y, f / b.px(1.0), d / b.px(1.0), angle, roof, height_m=height, clearance=0.2,
                        tag="house")
            if o is None:
                continue
            if b.inside(x, y):
                roof_counts[_ROOF_WORDS[roof]] = roof_counts.get(_ROOF_WORDS[roof], 0) + 1
            if not dense:
                _garden(b, x, y, mid, across, along_u, inward, d, f)


def _garden(b: SceneBuilder, x: float, y: float, mid: float, across: float, along_u: bool, inward: float,
            depth: float, front: float) -> None:
    """Driveway, pool and trees for a detached house at local ``(mid, across)``."""
    back = across + inward * (depth / 2 + b.px(b.uniform(4, 8)))
    if b.coin(0.25):
        size = b.px(b.uniform(4, 9))
        if size >= 3:
            px, py = b.local(mid, back) if along_u else b.local(back, mid)
            if b.is_free(px, py, size * 0.6):
                b.obj("pool", px, py, size, size * 0.55, b.layout.rotation, 0.0, b.colour("pool"), block=True)
    for _ in range(b.integer(0, 3)):
        r = b.px(b.uniform(2.0, 4.5))
        if 2 * r < MIN_OBJECT_PX:
            break
        off = b.uniform(-front, front)
        dv = inward * b.px(b.uniform(2, 14))
        tx, ty = b.local(mid + off, back + dv) if along_u else b.local(back + dv, mid + off)
        if b.is_free(tx, ty, r * 0.7):
            b.obj("tree", tx, ty, 2 * r, 2 * r, 0.0, b.uniform(5, 12), b.colour("tree", 10.0), tag="garden",
                  block=False)
            b.block_box(tx, ty, r * 0.5)


def _parked_cars(b: SceneBuilder, per_100m: float) -> int:
    """Cars parked along the edges of the street-grid streets; returns how many."""
    car = b.px(b.uniform(4.2, 4.8))
    if car < MIN_OBJECT_PX or per_100m <= 0:
        return 0
    n = 0
    street = float(b.layout.facts.get("street_px", 0.0))
    for area in list(b.layout.areas):
        if area.material != "asphalt" or area.shape.kind != "line" or len(area.shape.points) != 2:
            continue
        (x0, y0), (x1, y1) = area.shape.points
        length = math.dist((x0, y0), (x1, y1))
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        for side in (-1.0, 1.0):
            off = side * (street / 2 - car * 0.3)
            taken: set[int] = set()
            for _ in range(int(b.rng.poisson(per_100m * length * b.gsd / 100.0))):
                t = b.uniform(0, length)
                x, y = x0 + ux * t - uy * off, y0 + uy * t + ux * off
                if b.inside(x, y, car) and b.free_slot(taken, t, car * 0.7):
                    b.obj("car", x, y, car, car * 0.42, math.atan2(uy, ux), 1.5, b.car_colour(),
                          tag="street_car", block=False)
                    n += 1
    return n


# ---------------------------------------------------------------------------------------------- recipes


def build_dense_residential(b: SceneBuilder) -> None:
    """Tightly packed buildings in a street grid, courtyards with trees, parked cars."""
    ground = b.colour("concrete")
    b.area("concrete", Shape("full"), palette.scale(ground, 0.85), palette.scale(ground, 0.7))
    b.layout.material_params["concrete"] = {"slab_m": 1000.0}
    blocks = street_grid(b, (45, 90), (7, 13))
    if b.chance(0.15):
        b.add_river(width_m=b.uniform(10, 30))
    if b.chance(0.3):
        b.add_road(b.layout.rotation + b.uniform(-0.6, 0.6), b.uniform(-0.3, 0.3) * b.w,
                   width_m=b.uniform(16, 26), cars=3.0, tag="main")
    roofs = _roofs(b, True)
    roof_counts: dict[str, int] = {}
    estimate = 0
    if b.px(12.0) < MIN_HOUSE_PX:
        estimate = _urban_blocks(b, blocks, roofs, True, roof_counts)
    for blk in blocks if not estimate else []:
        _edge_buildings(b, blk, roofs, True, roof_counts)
        u0, v0, u1, v1 = blk
        if b.coin(0.6):
            inner = Shape("polygon", b.local_rect(u0 + b.px(12), v0 + b.px(12), u1 - b.px(12), v1 - b.px(12)))
            if min(u1 - u0, v1 - v0) > b.px(30):
                fill_grass(b, inner)
                b.scatter_trees(b.integer(0, 5), region=inner, tag="courtyard")
    n_cars = _parked_cars(b, b.uniform(2, 10))
    n = estimate or len(b.layout.visible("building"))
    b.feature("buildings", count=n, dense=True)
    b.layout.facts["roof_colours"] = [k for k, _ in sorted(roof_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if n_cars:
        b.feature("cars", count=n_cars)
    trees = len(b.layout.visible("tree"))
    if trees:
        b.feature("trees", count=trees)


def build_sparse_residential(b: SceneBuilder) -> None:
    """Detached houses with gardens, trees and pools along streets, in lawns or next to a lake or forest."""
    fill_grass(b)
    blocks = street_grid(b, (70, 130), (6, 10), one_way=b.coin(0.4))
    if b.chance(0.15):
        b.add_lake(radius_px=b.uniform(0.12, 0.2) * min(b.w, b.h))
    roofs = _roofs(b, False)
    roof_counts: dict[str, int] = {}
    estimate = 0
    if b.px(12.0) < MIN_HOUSE_PX:
        estimate = _urban_blocks(b, blocks, roofs, False, roof_counts)
    for blk in blocks if not estimate else []:
        _edge_buildings(b, blk, roofs, False, roof_counts)
    b.scatter_trees(b.integer(0, 25), tag="tree")
    n_cars = _parked_cars(b, b.uniform(0, 3))
    n = estimate or len(b.layout.visible("building"))
    b.feature("houses", count=n)
    b.layout.facts["roof_colours"] = [k for k, _ in sorted(roof_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    trees = len(b.layout.visible("tree"))
    if trees:
        b.feature("trees", count=trees)
    pools = len(b.layout.visible("pool"))
    if pools:
        b.feature("pools", count=pools)
    if n_cars:
        b.feature("cars", count=n_cars)


def build_industrial(b: SceneBuilder) -> None:
    """Large flat or sawtooth-roofed factory halls, storage tanks, paved yards, roads and trucks."""
    yard = b.choice(["concrete", "asphalt"], [0.6, 0.4])
    b.full(yard, yard, yard)
    b.layout.material_params["concrete"] = {"slab_m": b.uniform(4, 8), "angle": b.layout.rotation}
    if b.chance(0.3):
        # A strip of lawn along one side, or an irregular patch of grass.
        if b.coin(0.3):
            edge = b.uniform(-0.45, -0.25) * min(b.w, b.h)
            patch = Shape("polygon", b.local_rect(-b.half_diag, -b.half_diag, b.half_diag, edge))
        else:
            x, y = b.random_point()
            patch = Shape("polygon", blob(b.rng, x, y, b.uniform(0.1, 0.25) * b.w, b.uniform(0.08, 0.2) * b.w,
                                          b.uniform(0, 3.1)))
        fill_grass(b, patch)
    if b.chance(0.7):
        b.add_road(b.layout.rotation + (0 if b.coin(0.5) else math.pi / 2), b.uniform(-0.35, 0.35) * b.w,
                   cars=0.8)
    rot = b.layout.rotation
    _factory_halls(b, rot)
    n_tanks = _storage_tanks(b, rot) if b.chance(0.55) else 0
    n_trucks = _trucks(b, rot) if b.chance(0.5) else 0
    b.feature("factories", count=len(b.layout.visible("building")))
    if n_tanks:
        b.feature("storage tanks", count=len(b.layout.visible("tank")))
    if n_trucks:
        b.feature("trucks", count=n_trucks)


def _factory_halls(b: SceneBuilder, rot: float) -> None:
    """Up to 8 factory halls (60 tries), mostly aligned with ``rot`` and sharing one roof colour."""
    n_halls = 0
    roof = b.choice(["white", "grey", "blue", "dark"], [0.4, 0.35, 0.15, 0.1])
    for _ in range(60):
        if n_halls >= 8:
            break
        length_m, width_m = b.uniform(30, 140), b.uniform(20, 60)
        x, y = b.random_point()
        style = b.choice(["flat", "sawtooth", "gable"], [0.6, 0.3, 0.1])
        angle = rot + (0 if b.coin(0.7) else math.pi / 2)
        colour = roof if b.coin(0.7) else b.choice(["white", "grey", "blue"])
        if b.house(x, y, length_m, width_m, angle, colour, b.uniform(8, 20), style, tag="hall", clearance=0.55):
            n_halls += 1


def _storage_tanks(b: SceneBuilder, rot: float) -> int:
    """A grid of round storage tanks aligned with ``rot``; returns how many were placed."""
    n_tanks = 0
    r = b.px(b.uniform(5, 18))
    rows, cols = b.integer(1, 3), b.integer(2, 4)
    x0, y0 = b.random_point(r)
    tank_colour = b.colour("tank")
    for i in range(rows):
        for j in range(cols):
            x, y = (x0 + math.cos(rot) * j * 2.6 * r - math.sin(rot) * i * 2.6 * r,
                    y0 + math.sin(rot) * j * 2.6 * r + math.cos(rot) * i * 2.6 * r)
            if b.inside(x, y) and b.is_free(x, y, r) and 2 * r >= MIN_OBJECT_PX:
                shade = palette.scale(tank_colour, b.uniform(0.95, 1.03))
                b.obj("tank", x, y, 2 * r, 2 * r, 0.0, b.uniform(8, 20), shade, block=True)
                n_tanks += 1
    return n_tanks


def _trucks(b: SceneBuilder, rot: float) -> int:
    """A row of parked trucks (none when a truck would be under 3 px); returns how many were placed."""
    n_trucks = 0
    length = b.px(b.uniform(12, 17))
    if length < 3:
        return 0
    x0, y0 = b.random_point(length)
    for k in range(b.integer(2, 8)):
        x = x0 + math.cos(rot + math.pi / 2) * k * length * 0.35
        y = y0 + math.sin(rot + math.pi / 2) * k * length * 0.35
        if b.inside(x, y) and b.is_free(x, y, length * 0.3):
            b.obj("car", x, y, length, length * 0.2, rot, 3.5, b.colour("roof/white"), tag="truck")
            n_trucks += 1
    return n_trucks


def build_highway(b: SceneBuilder) -> None:
    """A multi-lane highway with traffic through fields, meadow, forest or bare land; maybe a crossing road."""
    fill_background(b, b.choice(["farmland", "meadow", "forest", "bare land"], [0.35, 0.3, 0.2, 0.15]))
    angle, offset = b.random_line(0.2)
    hw = b.add_road(angle, offset, kind="highway", cars=b.uniform(0.5, 6.0))
    if b.chance(0.3):
        b.add_road(angle + math.pi / 2 + b.uniform(-0.4, 0.4), b.uniform(-0.3, 0.3) * b.w, cars=1.0,
                   tag="crossing")
    if b.chance(0.2):
        n = 0
        for _ in range(10):
            x, y = b.random_point()
            if b.house(x, y, b.uniform(10, 25), b.uniform(8, 15), angle, b.choice(["red", "grey"])):
                n += 1
        if n:
            b.feature("buildings", count=n)
    b.layout.facts["highway_cars"] = int(hw.extra["cars"])


def build_airport(b: SceneBuilder) -> None:
    """Runway with markings, taxiway, apron with parked airplanes and a terminal, in mown grass."""
    fill_grass(b)
    rot = b.layout.rotation
    c, s = math.cos(rot), math.sin(rot)
    runway_w = b.px(b.uniform(45, 60))
    taxi_d = runway_w / 2 + b.px(b.uniform(60, 140))
    taxi_w = b.px(b.uniform(20, 25))
    apron0 = taxi_d + taxi_w / 2 + b.px(b.uniform(5, 15))
    apron1 = apron0 + b.px(b.uniform(70, 130))
    length_m = b.uniform(30, 70)
    plane_v = apron0 + b.px(length_m * 0.55 + 4)
    # Centre the view between the runway and the terminal, often on the row of parked airplanes, so that
    # fine-resolution tiles (which see only ~100 m) still show something of the airport.
    on_planes = b.coin(0.5)
    focus = plane_v + b.uniform(-0.25, 0.25) * min(b.w, b.h) if on_planes else b.uniform(-runway_w / 2, apron1)
    ext = b.half_diag * 1.5

    def at(u: float, v: float) -> tuple[float, float]:
        v -= focus
        return (b.cx + c * u - s * v, b.cy + s * u + c * v)

    def rect(u0: float, v0: float, u1: float, v1: float) -> Shape:
        return Shape("polygon", [at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)])

    start = -ext if b.coin(0.7) else b.uniform(-0.45, 0.1) * b.w
    runway = b.area("asphalt", rect(start, -runway_w / 2, ext, runway_w / 2), b.colour("asphalt"), None,
                    block=True)
    white = b.colour("marking/white")
    b.dashed(runway.uid, at(start + b.px(40), 0), at(ext, 0), 30.0, 20.0, 0.9, white)
    for sign in (-1, 1):
        edge = sign * (runway_w / 2 - b.px(1.5))
        b.paint(runway.uid, Shape("line", [at(start, edge), at(ext, edge)], b.px(0.9)), white)
    if start > -ext:
        bars = b.integer(6, 8)
        for k in range(bars):
            v = (k - (bars - 1) / 2) * runway_w / (bars + 1)
            b.paint(runway.uid, Shape("line", [at(start + b.px(6), v), at(start + b.px(36), v)], b.px(1.8)),
                    white)
    concrete = b.colour("concrete")
    b.layout.material_params["concrete"] = {"slab_m": b.uniform(5, 8), "angle": rot}
    taxi = b.area("concrete", rect(-ext, taxi_d - taxi_w / 2, ext, taxi_d + taxi_w / 2), concrete, None,
                  block=True)
    yellow = b.colour("marking/yellow")
    b.paint(taxi.uid, Shape("line", [at(-ext, taxi_d), at(ext, taxi_d)], b.px(0.3)), yellow)
    conn_u = b.uniform(-0.3, 0.3) * b.w
    b.area("concrete", rect(conn_u - taxi_w / 2, 0, conn_u + taxi_w / 2, taxi_d), concrete, None, block=True)
    b.area("concrete", rect(-ext, apron0, ext, apron1), palette.scale(concrete, 1.02), None, block=False)
    terminal = b.house(*at(b.uniform(-0.2, 0.2) * b.w, apron1 + b.px(22)), b.uniform(120, 300), 35.0, rot,
                       b.choice(["white", "grey"]), b.uniform(12, 20), "flat", tag="terminal", clearance=0.01)
    if terminal is not None:
        b.feature("terminal", where=region_word(terminal.x, terminal.y, b.w, b.h))
    spacing = b.px(length_m * b.uniform(1.15, 1.5))
    colour = b.colour("airplane")
    _parked_airplanes(b, [at(u, plane_v) for u in _row_positions(b, ext, spacing)], length_m, colour, on_planes)
    if b.chance(0.25):
        _taxiing_airplane(b, at(b.uniform(-0.3, 0.3) * b.w, taxi_d), colour)
    visible = b.layout.visible("airplane")
    if visible:
        mx = sum(p.x for p in visible) / len(visible)
        my = sum(p.y for p in visible) / len(visible)
        b.feature("airplanes", count=len(visible), where=region_word(mx, my, b.w, b.h))
    b.layout.facts["markings_visible"] = b.px(0.9) >= 0.4
    if b.shape_mask(runway.shape).any():
        b.feature("runway", where=b.line_where(rot, -focus), direction=direction_phrase(rot))


def _row_positions(b: SceneBuilder, ext: float, spacing: float) -> list[float]:
    """Positions (px along the apron, index 0 in the middle) of a row of parking spots ``spacing`` px apart."""
    u0 = b.uniform(-0.2, 0.2) * min(b.w, b.h)
    reach = math.ceil(ext / spacing)
    return [u0 + k * spacing for k in range(-reach, reach + 1)]


def _parked_airplanes(b: SceneBuilder, spots: list[tuple[float, float]], length_m: float, colour: palette.RGB,
                      keep_middle: bool) -> None:
    """Airplanes about ``length_m`` long at about half of the pixel positions ``spots`` (always the middle one
    with ``keep_middle``: the view is centred on the row), nose towards the runway."""
    rot = b.layout.rotation
    margin = min(b.px(length_m) * 0.45, 0.25 * min(b.w, b.h))
    middle = len(spots) // 2
    for k, (x, y) in enumerate(spots):
        if b.inside(x, y, margin) and ((keep_middle and k == middle) or b.coin(0.55)):
            length = b.px(length_m * b.uniform(0.9, 1.1))
            if length >= 2.5:
                b.obj("airplane", x, y, length, length * b.uniform(0.9, 1.1), rot - math.pi / 2, 4.0, colour,
                      tag="parked", block=False)


def _taxiing_airplane(b: SceneBuilder, spot: tuple[float, float], colour: palette.RGB) -> None:
    """One airplane on the taxiway at pixel position ``spot``, when it is inside the tile and at least 2.5 px."""
    x, y = spot
    rot = b.layout.rotation
    length = b.px(b.uniform(30, 70))
    if b.inside(x, y, min(length * 0.5, 0.25 * min(b.w, b.h))) and length >= 2.5:
        b.obj("airplane", x, y, length, length, rot + (0 if b.coin(0.5) else math.pi), 4.0, colour,
              tag="taxiing", block=False)


def build_parking_lot(b: SceneBuilder) -> None:
    """Rows of marked stalls with parked cars, sometimes with tree islands, a road or a large store."""
    rot = b.layout.rotation
    extent = b.extent_m()
    car_len = b.px(4.5)
    # Individually drawn cars are capped by limiting the lot to 220 m; when cars are sub-pixel the lot may grow.
    cap = 220.0 if car_len >= MIN_OBJECT_PX else max(220.0, 0.6 * extent)
    lot_m = min(extent * b.uniform(0.7, 1.6), cap)
    covers = lot_m >= extent * 1.4
    if covers:
        b.full("asphalt", "asphalt", "asphalt")
        half_u = half_v = b.half_diag
        cu = cv = 0.0
    else:
        cu, cv, half_u, half_v = _lot_in_grass(b, lot_m)
    lot_uid = b.layout.areas[-1].uid if not covers else b.layout.areas[0].uid
    white = b.colour("marking/white")
    stall_w, stall_d, aisle = b.px(b.uniform(2.5, 2.8)), b.px(5.0), b.px(b.uniform(6.0, 7.5))
    occupancy = b.uniform(0.2, 0.97)
    islands = b.coin(0.35) and b.px(3.0) >= 1.0
    line_w = b.px(0.15)
    c, s = math.cos(rot), math.sin(rot)
    n_cars = 0
    pitch = 2 * stall_d + aisle + (b.px(4.0) if islands else 0.0)
    ks = np.arange(math.ceil(-half_u / stall_w), math.floor(half_u / stall_w) - 1)
    us = cu + ks * stall_w
    v = cv - half_v + aisle / 2 + b.uniform(0, pitch * 0.3)
    while v + 2 * stall_d < cv + half_v:
        for row, inward in ((v, 1.0), (v + 2 * stall_d, -1.0)):
            if line_w * 0.9 >= 0.05:
                _stall_lines(b, lot_uid, us.tolist(), row, inward * stall_d, line_w, white)
            if car_len < MIN_OBJECT_PX:
                continue
            # Stall centres of the whole row at once; Python only for the occupied, visible ones.
            mv = row + inward * stall_d / 2
            xs = b.cx + c * (us + stall_w / 2) - s * mv
            ys = b.cy + s * (us + stall_w / 2) + c * mv
            draws = b.rng.random((len(us), 4))
            keep = (xs >= 0) & (xs < b.w) & (ys >= 0) & (ys < b.h) & (draws[:, 0] < occupancy)
            for i in np.flatnonzero(keep).tolist():
                d = draws[i]
                ang = rot + math.pi / 2 + (d[1] - 0.5) * 0.12 + (0.0 if d[2] < 0.5 else math.pi)
                b.obj("car", float(xs[i]), float(ys[i]), car_len * (0.92 + 0.16 * d[3]), car_len * 0.42, ang,
                      1.5, b.car_colour(), tag="parked", block=False)
                n_cars += 1
        if islands:
            _tree_island(b, cu, half_u, v + stall_d * 2 + b.px(2.0))
        v += pitch
    b.layout.facts["occupancy"] = occupancy
    b.layout.facts["cars_visible"] = car_len >= MIN_OBJECT_PX
    b.feature("cars", count=n_cars, parked=True)
    trees = len(b.layout.visible("tree"))
    if trees:
        b.feature("trees", count=trees)
    if b.layout.visible("building", "store"):
        o = b.layout.visible("building", "store")[0]
        b.feature("buildings", count=1, where=region_word(o.x, o.y, b.w, b.h))


def _lot_in_grass(b: SceneBuilder, lot_m: float) -> tuple[float, float, float, float]:
    """A paved lot about ``lot_m`` wide in grass, maybe with a road along it and a store; returns its centre and
    half sizes ``(cu, cv, half_u, half_v)`` in px of the rotated frame."""
    rot = b.layout.rotation
    fill_grass(b)
    half_u, half_v = b.px(lot_m) / 2, b.px(lot_m * b.uniform(0.7, 1.0)) / 2
    cu, cv = b.uniform(-0.12, 0.12) * b.w, b.uniform(-0.12, 0.12) * b.h
    if b.chance(0.5):
        b.add_road(rot, cv + half_v + b.px(12), width_m=10.0, cars=0.5)
    b.area("asphalt", Shape("polygon", b.local_rect(cu - half_u, cv - half_v, cu + half_u, cv + half_v)),
           b.colour("asphalt"), None, block=True)
    if b.chance(0.6):
        b.house(*b.local(cu, cv - half_v - b.px(30)), lot_m * 0.8, 40.0, rot, b.choice(["white", "grey"]),
                b.uniform(8, 14), "flat", tag="store", clearance=0.01)
    return cu, cv, half_u, half_v


def _stall_lines(b: SceneBuilder, uid: int, us: list[float], row: float, depth: float, width: float,
                 colour: palette.RGB) -> None:
    """Paint the stall separators of one row on lot ``uid``: from ``(u, row)`` to ``(u, row + depth)`` for each
    ``u`` (px of the rotated frame), skipping those far outside the tile."""
    for u in us:
        a, e = b.local(u, row), b.local(u, row + depth)
        if b.inside(a[0], a[1], -abs(depth)):
            b.paint(uid, Shape("line", [a, e], width), colour, 0.9)


def _tree_island(b: SceneBuilder, cu: float, half_u: float, v: float) -> None:
    """A grass strip ``half_u`` px either side of ``(cu, v)`` (px of the rotated frame) between stall rows, with
    trees every 12 m when they are big enough to draw."""
    p0, p1 = b.local(cu - half_u, v), b.local(cu + half_u, v)
    fill_grass(b, Shape("line", [p0, p1], b.px(3.0)))
    if 2 * b.px(2.0) < MIN_OBJECT_PX:
        return
    for k in range(int(2 * half_u / b.px(12))):
        x, y = b.local(cu - half_u + (k + 0.5) * b.px(12), v)
        if b.inside(x, y) and b.coin(0.7):
            r = b.px(b.uniform(2.0, 3.5))
            b.obj("tree", x, y, 2 * r, 2 * r, 0.0, b.uniform(5, 9), b.colour("tree", 10.0), block=False)
