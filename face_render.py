"""Drawing and shading of the synthetic faces (pillow + numpy): the person, its features, the
light and the background. synth_faces.py builds the bona fide faces and the attacks on top.
"""
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SKIN_DARK, SKIN_LIGHT = np.array([0.33, 0.21, 0.14]), np.array([0.97, 0.80, 0.70])
HAIR = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.75, 0.60, 0.35],
                 [0.55, 0.22, 0.10], [0.60, 0.60, 0.60]])


def _person(rng):
    """Identity and pose: head centre (cx, cy) and half-axes (a, b) as fractions of the side,
    roll in degrees, yaw as a sideways shift of the features; RGB albedos in [0, 1]; hair_style
    0 bald, 1 short, 2 long. Bona fide faces wear beards and real glasses too."""
    s, t = rng.uniform(0.85, 1.12), rng.uniform()
    skin = (1 - t) * SKIN_DARK + t * SKIN_LIGHT + rng.normal(0, 0.025, 3)
    skin = np.clip(skin + np.array([0.02, 0, -0.02]) * rng.normal(), 0.05, 1)   # redder / yellower
    return SimpleNamespace(
        cx=0.5 + rng.normal(0, 0.035), cy=0.46 + rng.normal(0, 0.025), a=0.21 * s,
        b=0.275 * s * rng.uniform(0.93, 1.07), roll=rng.normal(0, 6), yaw=rng.normal(0, 0.12),
        skin=skin, hair=np.clip(HAIR[rng.integers(5)] * rng.uniform(0.8, 1.2), 0, 1),
        iris=rng.uniform(0.1, 0.5, 3), cloth=rng.uniform(0.1, 0.9, 3),
        lip=np.clip(skin * [0.85, 0.55, 0.55] + rng.normal(0, 0.03, 3), 0, 1),
        hair_style=int(rng.choice(3, p=[0.15, 0.5, 0.35])), beard=rng.uniform() < 0.15,
        glasses=rng.uniform() < 0.15)


def _with(p, **changes):
    return SimpleNamespace(**{**vars(p), **changes})


def _eye_xy(p, side):
    """Centre of the left (side=-1) or right (+1) eye, fractions of the side (before roll)."""
    return p.cx + (side * 0.38 + p.yaw * 0.25) * p.a, p.cy - 0.08 * p.b


def _box(x, y, rx, ry):
    return (x - rx, y - ry, x + rx, y + ry)


def _ink(rgb):
    return tuple(int(v) for v in np.clip(np.asarray(rgb) * 255 + 0.5, 0, 255))


class _Layers:
    """Albedo (RGBA) and two masks drawn alongside it at 2x: `skin` (gets skin texture) and
    `flat` (a material with little shading: masks, plastic, paper). One `paint` call draws a
    shape on all three, so the masks always line up with the colours."""

    def __init__(self, size):
        self.S = 2 * size
        self.img = [Image.new(m, (self.S, self.S), 0) for m in ("RGBA", "L", "L")]
        self.draw = [ImageDraw.Draw(im) for im in self.img]

    def paint(self, shape, xy, rgb, skin=0, flat=0, outline=None, **kw):
        for d, fill in zip(self.draw, (_ink(rgb) + (255,), skin, flat)):
            if outline is not None:       # a coloured rim in the albedo; the masks just fill it
                kw["outline"] = _ink(outline) + (255,) if d is self.draw[0] else fill
            getattr(d, shape)(xy, fill=fill, **kw)


def _eyes(L, p, painted=False):
    a, b = p.a * L.S, p.b * L.S
    for side in (-1, 1):
        ex, ey = np.multiply(_eye_xy(p, side), L.S)
        if painted:               # mannequins: a flat dark almond, no sclera
            L.paint("ellipse", _box(ex, ey, 0.15 * a, 0.05 * b), p.iris * 0.4, flat=255)
            continue
        for rx, ry, rgb in ((0.17, 0.07, (0.93, 0.9, 0.86)), (0.075, 0.065, p.iris),
                            (0.035, 0.035, (0.03,) * 3)):      # sclera, iris, pupil
            L.paint("ellipse", _box(ex, ey, rx * a, ry * b), rgb)


def _features(L, p, painted=False, flat=0):
    """Brows, nose, beard, mouth and real glasses (the eyes are _eyes')."""
    a, b, cx, cy = p.a * L.S, p.b * L.S, p.cx * L.S, p.cy * L.S
    dx, skin = p.yaw * 0.25 * a, 0 if painted else 255
    for side in (-1, 1):
        ex = cx + side * 0.38 * a + dx
        L.paint("line", (ex - 0.18 * a, cy - 0.26 * b, ex + 0.18 * a, cy - (0.27 + side * 0.02) * b),
                p.hair * 0.8, flat=flat, width=max(1, int(0.05 * b)))
        L.paint("ellipse", _box(cx + 1.6 * dx + side * 0.09 * a, cy + 0.2 * b, 0.05 * a, 0.03 * b),
                p.skin * 0.55, skin, flat)                      # nostrils
    L.paint("line", (cx + dx, cy - 0.05 * b, cx + 1.6 * dx, cy + 0.2 * b), p.skin * 0.8, skin, flat,
            width=max(1, int(0.04 * a)))
    if p.beard:
        L.paint("chord", _box(cx, cy, a, b), p.hair, 60, flat, start=15, end=165)
    L.paint("ellipse", _box(cx + 1.3 * dx, cy + 0.5 * b, 0.28 * a, 0.07 * b), p.lip, skin, flat)
    for side in (-1, 1) if p.glasses and not painted else ():
        ex, ey = np.multiply(_eye_xy(p, side), L.S)
        L.draw[0].ellipse(_box(ex, ey, 0.26 * a, 0.16 * b), outline=(25, 25, 30, 255),
                          width=max(1, int(0.03 * a)))


def _draw(p, size, under=(), over=(), plastic=0):
    """Layers of one person. `under` hooks paint on bare skin (makeup, tattoo), `over` hooks on
    the finished face (masks, glasses, wig); `plastic` (0..255) makes the whole person a flat
    painted material (mannequin)."""
    L = _Layers(size)
    a, b, cx, cy = p.a * L.S, p.b * L.S, p.cx * L.S, p.cy * L.S
    skin = 0 if plastic else 255
    if p.hair_style == 2:     # long hair falls behind head and neck
        L.paint("rounded_rectangle", _box(cx, cy + 0.35 * b, 1.18 * a, 1.25 * b), p.hair, 0,
                plastic, radius=a)
    L.paint("ellipse", _box(cx, cy + 2.15 * b, 2.4 * a, 1.05 * b), p.cloth, 0, plastic)
    L.paint("rectangle", (cx - 0.45 * a, cy + 0.5 * b, cx + 0.45 * a, cy + 1.3 * b), p.skin * 0.88,
            skin, plastic)
    L.paint("ellipse", _box(cx, cy, a, b), p.skin, skin, plastic)
    for hook in under:
        hook(L, p)
    _eyes(L, p, painted=bool(plastic))
    _features(L, p, painted=bool(plastic), flat=plastic)
    for hook in over:
        hook(L, p)
    if p.hair_style:          # hair cap last: it frames a mask the way it frames a face
        L.paint("chord", _box(cx, cy - 0.06 * b, 1.07 * a, 1.04 * b), p.hair, 0, plastic,
                start=200, end=340)
    return L


def _grid(size):
    return (np.mgrid[0:size, 0:size] + 0.5) / size                       # (yy, xx) in (0, 1)


def _normals(p, size):
    """Unit normals (H, W, 3): an ellipsoid head; elsewhere a horizontal cylinder (the body)."""
    yy, xx = _grid(size)
    c, s = np.cos(np.radians(p.roll)), np.sin(np.radians(p.roll))
    x, y = xx - p.cx, yy - p.cy
    u, v = (c * x - s * y) / p.a, (s * x + c * y) / p.b   # undo the roll (PIL turns anticlockwise)
    r2, ub = u ** 2 + v ** 2, np.clip(x / (2.4 * p.a), -0.95, 0.95)
    n = np.where((r2 < 1)[..., None], np.stack([u, v, np.sqrt(np.clip(1 - r2, 0, 1))], -1),
                 np.stack([ub, 0 * ub, np.sqrt(1 - ub ** 2)], -1))
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _light(rng, az_mean, spread, ambient):
    """(unit vector to the light, ambient share); elevation 35-60 degrees off the camera axis."""
    az, el = np.radians(az_mean + rng.normal(0, spread)), np.radians(rng.uniform(35, 60))
    return np.array([np.cos(az) * np.sin(el), -np.sin(az) * np.sin(el), np.cos(el)]), ambient


def _shade(L, p, size, light, rng):
    """rgb = albedo * (amb + (1 - amb) * 1.3 * max(0, n.l)) * (1 + skin texture) + gloss;
    flat materials keep 20% of the shading's variation around its frontal value."""
    rot = [im.rotate(p.roll, Image.BILINEAR, center=(p.cx * L.S, p.cy * L.S)) for im in L.img]
    arr = [np.asarray(im.resize((size, size), Image.BOX), np.float32) / 255 for im in rot]
    alb, alpha, skin, flat = arr[0][..., :3], arr[0][..., 3], arr[1], arr[2]
    (l, amb), n = light, _normals(p, size)                                 # n: (H, W, 3)
    lam, front = amb + (1 - amb) * 1.3 * np.clip(n @ l, 0, None), amb + (1 - amb) * 1.3 * l[2]
    lam = front + (lam - front) * (1 - 0.8 * flat)
    # skin texture: fine noise, drawn at half resolution so that it is blotchy like pores
    noise = Image.fromarray(rng.normal(0, 0.04, (size // 2,) * 2).astype(np.float32), "F")
    tex = 1 + np.asarray(noise.resize((size, size), Image.BILINEAR)) * skin * (1 - flat)
    h = (l + [0, 0, 1]) / np.linalg.norm(l + [0, 0, 1])                    # Blinn half-vector
    gloss = 0.45 * flat * np.clip(n @ h, 0, None) ** 24
    return alb * (lam * tex)[..., None] + gloss[..., None], alpha


def _plane_light(light, size):
    """Lambert light on a flat surface facing the camera, falling off across it: (H, W)."""
    (l, amb), (yy, xx) = light, _grid(size)
    return amb + (1 - amb) * 1.3 * l[2] * (1 + 0.35 * ((xx - 0.5) * l[0] + (yy - 0.5) * l[1]))


def _background(rng, style, rgb, size):
    base, (yy, xx) = np.clip(np.asarray(rgb) + rng.normal(0, 0.05, 3), 0, 1), _grid(size)
    if style == "clutter":    # a room: a few blurred objects of random colours
        im = Image.new("RGB", (size, size), _ink(base))
        for _ in range(6):
            (x0, y0), (w, h) = rng.uniform(-0.2, 1, 2) * size, rng.uniform(0.15, 0.6, 2) * size
            ImageDraw.Draw(im).rectangle((x0, y0, x0 + w, y0 + h), _ink(rng.uniform(0.1, 0.9, 3)))
        return np.asarray(im.filter(ImageFilter.GaussianBlur(size / 40)), np.float32) / 255
    th = rng.uniform(0, 2 * np.pi)
    ramp = {"gradient": 1 + 0.4 * (np.cos(th) * (xx - 0.5) + np.sin(th) * (yy - 0.5)),
            "dark": 1.2 - 0.8 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2),     # studio vignette
            "flat": 1 + 0.08 * (yy - 0.5)}[style]
    return base * ramp[..., None]


def _over(bg, rgb, alpha):
    return bg * (1 - alpha[..., None]) + rgb * alpha[..., None]


def _room(rng, dom, size):
    """The domain's light, and its background lit by it."""
    light = _light(rng, dom.light_az, dom.light_spread, dom.ambient)
    return light, _background(rng, dom.bg, dom.bg_rgb, size) * _plane_light(light, size)[..., None]
