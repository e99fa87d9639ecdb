"""Synthetic face anti-spoofing corpus: four domains that mirror the face paper's four protocols.

Face paper (Jiang, Li et al., AAAI 2026), "Datasets and Evaluation Protocols": CeFa or CASIA-SURF
is the source, HQ-WMCA or SiW-Mv2 the unseen target, which holds attack types the sources never
show (its Fig. 6) under other backgrounds, lights and cameras. No face data can ship with this
repo, so this module draws a stand-in with pillow + numpy (the drawing and shading helpers live in
face_render.py). One image goes through

  _person (identity, pose) -> _draw (albedo, skin and flat-material layers, drawn at 2x)
  -> _shade (Lambert light on an ellipsoid head, skin texture, gloss on plastic)
  -> the attack's presentation (_ATTACKS: print, replay, cut, masks, ...)
  -> _camera: the domain's exposure, colour cast, sensor resolution and noise, JPEG.

Each image depends only on (seed, domain, index, size): sample_rng seeds its generator.

Choices (the paper's data are real recordings; these are ours):
 1. Attack sets follow the paper's dataset descriptions: CASIA-SURF print + cut; CeFa print,
    replay, 3D-print/silicone masks and wigs (the paper notes CeFa's wig spoofs); the targets
    add makeup, tattoo, paper glasses, mannequin (HQ-WMCA) and half mask (SiW-Mv2).
 2. Makeup, tattoo and wig are worn on a live face and labelled "fake", as in HQ-WMCA.
 3. Half of each domain is bona fide; spoofs cycle through the domain's attack types by index,
    each as often as its weight says. The target weights put about half of each target's
    spoofs in attack types a source has (print is the one type both sources share), so that
    transfer is possible but not decided: HQ-WMCA-like 40 % (from SURF) / 60 % (from CeFa),
    SiW-Mv2-like 50 % / 50 %; the rest are attack types no source shows.
 4. Trace strengths come from fixed ranges set by eye on a contact sheet, not tuned for any
    method; halftone dots fall below a low-resolution camera's Nyquist rate, as in real life,
    and no target camera is that coarse (the SiW-Mv2-like one samples at 0.8: the dots survive,
    weakened by its noise and JPEG).
 5. The picture an attacker prints or replays was taken in the domain's own room with
    probability PHOTO_ROOM, elsewhere otherwise (the data sets record their attacks from photos
    of their own subjects, often in the same session). So the background behind a print is
    a cue for half of the prints only, never a perfect shortcut.
"""
import csv
import io
import json
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from face_render import (HAIR, _background, _box, _draw, _eye_xy, _eyes, _features, _light,
                         _over, _person, _plane_light, _room, _shade, _with)

VERSION = 2
HEADER = ("path", "label", "attack", "domain", "split")
# images per source / target domain: source test sets of 200 (60/20/20), target test sets of 240
DEFAULT_N = {"source": 1000, "target": 300}
QUICK_N, QUICK_SIZE = 48, 56
PHOTO_ROOM = 0.5     # share of printed / replayed photos taken in the domain's own room (choice 5)


@dataclass(frozen=True)
class Domain:
    """One recording set-up. Everything but `attacks` is a spoof-irrelevant covariate."""
    role: str            # "source" (train/dev/test splits) or "target" (dev/test)
    attacks: tuple       # attack types recorded in this domain
    bg: str              # background style: "flat" | "gradient" | "dark" | "clutter"
    bg_rgb: tuple        # mean background colour
    light_az: float      # mean light azimuth, degrees in the image plane (0 = right, 90 = above)
    light_spread: float  # std of that azimuth, degrees
    ambient: float       # ambient share of the light: high = flat lighting, low = contrasty
    gain: float          # exposure
    cast: tuple          # RGB gains of the camera's white balance (colour cast)
    noise: float         # sensor noise std, 8-bit units
    res: float           # sensor resolution / output resolution (down- then up-scaling)
    jpeg: int = 0        # JPEG quality of the camera pipeline, 0 = lossless
    weights: tuple = ()  # relative frequency of each attack type among the spoofs (() = equal)


DOMAINS = {
    "cefa_like": Domain("source", ("print", "replay", "mask", "wig"), "flat", (0.55, 0.57, 0.60),
                        150, 20, 0.35, 0.95, (1.08, 1.0, 0.88), 3.0, 1.0),
    "surf_like": Domain("source", ("print", "cut"), "gradient", (0.72, 0.70, 0.62),
                        90, 25, 0.55, 1.08, (0.96, 1.04, 0.94), 2.0, 1.0),
    "hqwmca_like": Domain("target", ("print", "replay", "mask", "wig", "mannequin",
                                     "paper_glasses", "makeup", "tattoo"), "dark",
                          (0.14, 0.15, 0.18), 20, 15, 0.25, 1.0, (0.92, 1.0, 1.10), 1.5, 1.0,
                          weights=(12, 2, 2, 2, 3, 3, 3, 3)),
    "siwmv2_like": Domain("target", ("print", "cut", "replay", "mask", "half_mask", "mannequin",
                                     "makeup", "paper_glasses"), "clutter", (0.5, 0.45, 0.4),
                          60, 60, 0.40, 0.9, (1.05, 0.94, 1.04), 6.0, 0.8, 70,
                          weights=(12, 8, 4, 4, 3, 3, 3, 3)),
}
# The paper's Table 1 protocols: name -> (source domain, target domain).
PROTOCOLS = {"cefa_to_hqwmca": ("cefa_like", "hqwmca_like"),
             "cefa_to_siwmv2": ("cefa_like", "siwmv2_like"),
             "surf_to_hqwmca": ("surf_like", "hqwmca_like"),
             "surf_to_siwmv2": ("surf_like", "siwmv2_like")}
SPLITS = {"source": (("train", 0.6), ("dev", 0.2), ("test", 0.2)),
          "target": (("dev", 0.2), ("test", 0.8)),
          "pool": (("train", 0.85), ("dev", 0.15))}      # the stand-in's pre-training pool
# The physical trace each attack leaves (for docs, prompts and per-attack reports).
TRACES = {
    "print": "halftone dots, reduced gamut and contrast, paper edge, flat planar lighting",
    "replay": "moire pattern, pixel grid, glare spot, dark bezel, bluish screen white",
    "cut": "printed face with cut-out eye holes showing live eyes behind, shadowed hole rims",
    "mask": "rigid or silicone mask: flat shading, uniform texture, hard edges at the rim",
    "half_mask": "mask over the lower face: flat uniform material, hard edge, straps",
    "mannequin": "plastic head: uniform texture, glossy highlight, painted eyes",
    "paper_glasses": "paper frame with printed eyes: flat, hard-edged, no depth",
    "makeup": "obfuscation makeup: whitened skin, vivid eye shadow, painted lips and lines",
    "tattoo": "ink arcs and dots on cheeks and forehead",
    "wig": "voluminous hair down to the brows: uniform colour, sheen, coarse strands",
}


def sample_rng(seed, domain, index):
    """The generator of one sample: a function of (seed, domain, index) only."""
    return np.random.default_rng([seed, zlib.crc32(domain.encode()), index])


def attack_cycle(dom):
    """The domain's spoofs in one period: attack k `weights[k]` times, spread evenly (attack k's
    j-th copy sits at (j + 1/2) / w_k of the period), so any stretch of indices holds each type
    in about its share. Equal weights give `attacks` itself."""
    weights = dom.weights or (1,) * len(dom.attacks)
    if len(weights) != len(dom.attacks):
        raise ValueError(f"{len(weights)} weights for {len(dom.attacks)} attack types")
    slots = [((j + 0.5) / w, k) for k, w in enumerate(weights) for j in range(w)]
    return tuple(dom.attacks[k] for _, k in sorted(slots))


def attack_of(domain, index):
    """Even indices are bona fide ("real"); odd ones walk through the domain's attack_cycle."""
    cycle = attack_cycle(DOMAINS[domain])
    return "real" if index % 2 == 0 else cycle[(index // 2) % len(cycle)]


def split_of(domain, index, n):
    """Split of sample `index` of `n`: contiguous index ranges in SPLITS' proportions."""
    return role_split(DOMAINS[domain].role, index, n)


def role_split(role, index, n):
    """Split of sample `index` of `n` in a set of this role (SPLITS)."""
    splits = SPLITS[role]
    ends = np.round(np.cumsum([frac for _, frac in splits]) * n)
    return splits[min(int(np.searchsorted(ends, index, side="right")), len(splits) - 1)][0]


def _live(rng, dom, size, p, **hooks):
    """A person in front of the camera, in this domain's room and light."""
    light, bg = _room(rng, dom, size)
    return _over(bg, *_shade(_draw(p, size, **hooks), p, size, light, rng))


def _photo(rng, dom, p, size):
    """The picture an attacker prints or replays: taken in this domain's room with probability
    PHOTO_ROOM (choice 5), else elsewhere under another light."""
    if rng.uniform() < PHOTO_ROOM:
        light, bg = _room(rng, dom, size)
    else:
        style = ("flat", "gradient", "dark", "clutter")[rng.integers(4)]
        bg = _background(rng, style, rng.uniform(0.2, 0.8, 3), size)
        light = _light(rng, rng.uniform(0, 180), 0, rng.uniform(0.3, 0.6))
    return np.clip(_over(bg, *_shade(_draw(p, size), p, size, light, rng)), 0, 1)


def _u8(x):
    return np.clip(np.asarray(x) * 255 + 0.5, 0, 255).astype(np.uint8)


def _place(rng, img, size, pad_rgb, pad, jitter=1.0, hole=None):
    """Hold a flat sheet (print or screen) up to the camera: add a border of `pad` times the
    side, scale, rotate and shift. Returns rgb, alpha and `hole` (an L array) warped alike."""
    b = int(round(pad * size))
    sheet = np.empty((size + 2 * b, size + 2 * b, 3), np.float32)
    sheet[:], sheet[b:b + size, b:b + size] = pad_rgb, img
    s, th = rng.uniform(0.9, 1.1) ** jitter, np.radians(rng.normal(0, 4 * jitter))
    (ox, oy), cin = size / 2 + rng.normal(0, 0.04 * jitter * size, 2), size / 2 + b
    c, si = np.cos(th) / s, np.sin(th) / s
    # PIL's affine maps an output pixel to its input: in = cin + R(-th) (out - o) / s
    data = (c, si, cin - c * ox - si * oy, -si, c, cin + si * ox - c * oy)
    warp = lambda im: np.asarray(im.transform((size, size), Image.AFFINE, data, Image.BILINEAR),
                                 np.float32) / 255
    rgba = warp(Image.fromarray(np.dstack([_u8(sheet), np.full(sheet.shape[:2], 255, np.uint8)])))
    return rgba[..., :3], rgba[..., 3], None if hole is None else warp(Image.fromarray(np.pad(hole, b)))


def _halftone(img, rng):
    """Printer dots: a rotated cosine screen of pitch 3-4.5 px, strongest in mid-tones (paper
    white and solid ink carry none). screen = cos(2 pi u / pitch) cos(2 pi v / pitch)."""
    size = img.shape[0]
    pitch, th, amp = rng.uniform(3.0, 4.5), rng.uniform(0, np.pi), rng.uniform(0.25, 0.6)
    yy, xx = np.mgrid[0:size, 0:size]
    u, v = xx * np.cos(th) + yy * np.sin(th), -xx * np.sin(th) + yy * np.cos(th)
    screen = np.cos(2 * np.pi * u / pitch) * np.cos(2 * np.pi * v / pitch)
    return np.clip(img + amp * screen[..., None] * img * (1 - img), 0, 1)


def _print(rng, dom, size, holes=False):
    """Print attack; with `holes`, the cut photo: the attacker's own eyes show through it."""
    p, hole = _person(rng), None
    ph = _photo(rng, dom, p, size)
    lum = ph.mean(-1, keepdims=True)
    ph = 0.1 + 0.78 * (lum + rng.uniform(0.7, 0.9) * (ph - lum))   # reduced gamut: contrast, colour
    if holes:
        im = Image.new("L", (size, size), 0)
        for side in (-1, 1):
            ex, ey = np.multiply(_eye_xy(p, side), size)
            ImageDraw.Draw(im).ellipse(_box(ex, ey, 0.3 * p.a * size, 0.14 * p.b * size), 255)
        hole = np.asarray(im.rotate(p.roll, Image.BILINEAR, center=(p.cx * size, p.cy * size)))
    paper = rng.uniform(0.9, 1.0) - rng.uniform(0, 0.06, 3)
    rgb, alpha, hole = _place(rng, ph, size, paper, rng.uniform(0.03, 0.15), 0.4 if holes else 1, hole)
    # the dots go on after the warp: resampling would blur them away, and the sheet's small
    # rotation and scale would only change the screen's angle and pitch, random anyway
    light, bg = _room(rng, dom, size)
    sheet = _halftone(rgb, rng) * _plane_light(light, size)[..., None]
    if holes:                 # a live face behind, and a shadowed rim around each cut
        rim = np.asarray(Image.fromarray(_u8(hole)).filter(ImageFilter.MaxFilter(3))) / 255 - hole
        shift = rng.normal(0, 0.01, 2)
        behind = _live(rng, dom, size, _with(p, cx=p.cx + shift[0], cy=p.cy + shift[1]))
        sheet = _over(sheet * (1 - 0.5 * rim[..., None]), behind, hole)
    return _over(bg, sheet, alpha)


def _replay(rng, dom, size):
    """Replay attack: a screen with a pixel grid and a bluish white, seen through the camera."""
    ph = _photo(rng, dom, _person(rng), size) ** 0.9 * [0.95, 1.0, 1.08]
    k, g, grid = int(rng.choice([2, 3])), rng.uniform(0.04, 0.12), np.ones((size, size))
    grid[::k] *= 1 - g        # dark gaps between the screen's pixels
    grid[:, ::k] *= 1 - g
    rgb, alpha, _ = _place(rng, ph * grid[..., None], size, rng.uniform(0.02, 0.08),
                           rng.uniform(0.03, 0.1))
    yy, xx = np.mgrid[0:size, 0:size]
    # moire: the screen's grid beating against the sensor's, a slanted low-frequency wave
    f, th, amp = rng.uniform(0.08, 0.16), rng.uniform(0, np.pi), rng.uniform(0.04, 0.08)
    wave = np.cos(2 * np.pi * f * (xx * np.cos(th) + yy * np.sin(th)) + rng.uniform(0, 2 * np.pi))
    (gx, gy), r = rng.uniform(0.2, 0.8, 2) * size, 0.1 * size          # glare of a room light
    glare = rng.uniform(0.15, 0.45) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * r ** 2))
    screen = (rgb * (1 + amp * wave)[..., None] + glare[..., None]) * rng.uniform(1.0, 1.15)
    return _over(_room(rng, dom, size)[1], screen, alpha)


def _mask(rng, dom, size, half=False):
    """Rigid (3D-printed resin, pale) or silicone (near the skin) mask with painted features
    and eye holes; `half` covers only the lower face and is tied with straps."""
    p = _person(rng)
    col = np.clip(rng.uniform(0.75, 0.9) * np.array([1, 0.95, 0.85]) if rng.uniform() < 0.5
                  else p.skin * rng.uniform(0.9, 1.15, 3), 0, 1)
    def over(L, p):
        a, b, cx, cy = p.a * L.S, p.b * L.S, p.cx * L.S, p.cy * L.S
        if half:              # from below the nose to the chin, straps to the ears
            L.paint("chord", _box(cx, cy, 0.96 * a, b), col, flat=255, outline=col * 0.6,
                    width=2, start=8, end=172)
            for side in (-1, 1):
                L.paint("line", (cx + side * 0.7 * a, cy + 0.22 * b, cx + side * a, cy), col * 0.7,
                        flat=255, width=2)
        else:                 # painted features on the mask, the wearer's eyes in its holes
            L.paint("ellipse", _box(cx, cy + 0.04 * b, 0.93 * a, 0.97 * b), col, flat=255,
                    outline=col * 0.6, width=2)
            _features(L, _with(p, skin=col, lip=col * [1, 0.7, 0.7], beard=False, glasses=False),
                      True, 255)
            _eyes(L, p)
    return _live(rng, dom, size, p, over=(over,))


def _mannequin(rng, dom, size):
    base = np.clip(rng.uniform(0.7, 0.95) * np.array([1, 0.92, 0.82]) + rng.normal(0, 0.03, 3), 0, 1)
    p = _with(_person(rng), skin=base, lip=base * [0.9, 0.6, 0.6], iris=base * 0.3,
              hair=base * 0.7, beard=False, glasses=False, hair_style=int(rng.choice([0, 1])))
    return _live(rng, dom, size, p, plastic=int(rng.uniform(150, 230)))


def _paper_glasses(rng, dom, size):
    p, paper = _person(rng), rng.uniform(0.6, 1.0, 3)
    def over(L, p):           # paper frames with printed eyes: bigger, darker, perfectly flat
        a, b, cx, ey = p.a * L.S, p.b * L.S, p.cx * L.S, _eye_xy(p, 1)[1] * L.S
        L.paint("line", (cx - a, ey, cx + a, ey), paper * 0.9, flat=255, width=max(2, int(0.06 * b)))
        for side in (-1, 1):
            ex = _eye_xy(p, side)[0] * L.S
            L.paint("rectangle", _box(ex, ey, 0.32 * a, 0.19 * b), paper, flat=255)
            for rx, ry, rgb in ((0.22, 0.1, (0.97,) * 3), (0.1, 0.095, p.iris * 0.7),
                                (0.045, 0.045, (0,) * 3)):
                L.paint("ellipse", _box(ex, ey, rx * a, ry * b), rgb, flat=255)
    return _live(rng, dom, size, p, over=(over,))


def _makeup(rng, dom, size):
    p = _person(rng)
    p = _with(p, skin=p.skin + rng.uniform(0.2, 0.5) * (0.95 - p.skin), hair=p.hair * 0.4,
              lip=rng.uniform(0, 0.6, 3))                          # foundation, painted lips
    shadow = rng.uniform(0.05, 0.8, 3)
    def under(L, p):          # vivid eye shadow and painted cheek lines
        a, b = p.a * L.S, p.b * L.S
        for side in (-1, 1):
            ex, ey = np.multiply(_eye_xy(p, side), L.S)
            L.paint("ellipse", _box(ex, ey - 0.05 * b, 0.3 * a, 0.17 * b), shadow, 255)
            L.paint("line", (ex - side * 0.1 * a, ey + 0.13 * b, ex + side * 0.25 * a, ey + 0.38 * b),
                    shadow * 0.6, 255, width=max(1, int(0.04 * a)))
    return _live(rng, dom, size, p, under=(under,))


def _tattoo(rng, dom, size):
    p, ink = _person(rng), rng.uniform(0.05, 0.3, 3) * [0.7, 0.9, 1.2]
    def under(L, p):          # ink arcs ending in dots, on the cheeks and the forehead
        for _ in range(rng.integers(3, 7)):
            x = (p.cx + rng.uniform(-0.7, 0.7) * p.a) * L.S
            y = (p.cy + rng.choice([-0.5, 0.25]) * p.b + rng.normal(0, 0.06)) * L.S
            r, start = rng.uniform(0.1, 0.3) * p.a * L.S, rng.uniform(0, 360)
            L.paint("arc", _box(x, y, r, r), ink, 255, start=start, end=start + rng.uniform(90, 360),
                    width=2)
            L.paint("ellipse", _box(x + r, y, 1.5, 1.5), ink, 255)
    return _live(rng, dom, size, p, under=(under,))


def _wig(rng, dom, size):
    p = _with(_person(rng), hair_style=0)          # the wig hides the wearer's own hair
    natural = HAIR[rng.integers(5)] * rng.uniform(0.8, 1.2)
    col = np.clip(natural if rng.uniform() < 0.7 else rng.uniform(0, 1, 3) ** 1.5, 0.03, 1)
    def over(L, p):           # voluminous cap down to the brows, side curtains, coarse strands
        a, b, cx, cy = p.a * L.S, p.b * L.S, p.cx * L.S, p.cy * L.S
        for side in (-1, 1):
            L.paint("rounded_rectangle", _box(cx + side * 1.02 * a, cy + 0.15 * b, 0.25 * a, 0.6 * b),
                    col, flat=120, radius=0.2 * a)
        wy, wa, wb = cy - 0.12 * b, 1.3 * a, 1.16 * b
        L.paint("chord", _box(cx, wy, wa, wb), col, flat=120, start=190, end=350)
        for x in np.linspace(cx - 1.1 * a, cx + 1.1 * a, 14):
            top = wy - wb * np.sqrt(1 - ((x - cx) / wa) ** 2) + 2          # start inside the cap
            L.paint("line", (x, top, x + rng.normal(0, 0.1 * a), cy - 0.3 * b), col * 0.75,
                    flat=120, width=1)
    return _live(rng, dom, size, p, over=(over,))


_ATTACKS = {
    "real": lambda rng, dom, size: _live(rng, dom, size, _person(rng)),
    "print": _print, "cut": lambda rng, dom, size: _print(rng, dom, size, holes=True),
    "replay": _replay, "mask": _mask, "half_mask": lambda rng, dom, size: _mask(rng, dom, size, True),
    "mannequin": _mannequin, "paper_glasses": _paper_glasses, "makeup": _makeup,
    "tattoo": _tattoo, "wig": _wig,
}


def _camera(img, dom, rng):
    """Exposure and colour cast; the sensor samples at `res` and adds noise; upscale; JPEG."""
    size, small = img.shape[0], max(8, round(img.shape[0] * dom.res))
    im = Image.fromarray(_u8(img * dom.gain * np.asarray(dom.cast))).resize((small, small),
                                                                            Image.BILINEAR)
    noisy = np.asarray(im, np.float32) + rng.normal(0, dom.noise, (small, small, 3))
    im = Image.fromarray(_u8(noisy / 255)).resize((size, size), Image.BICUBIC)
    if dom.jpeg:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=dom.jpeg)
        im = Image.open(buf).convert("RGB")
    return im


def render(dom, attack, rng, size):
    """PIL RGB image (size x size) of `attack` ("real" or an attack type) in `dom`'s room,
    seen through `dom`'s camera; every random draw comes from `rng`."""
    return _camera(_ATTACKS[attack](rng, dom, size), dom, rng)


def render_face(seed, domain, index, size=64):
    """PIL RGB image (size x size) of sample `index` of `domain`; attack_of(domain, index)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown face domain {domain!r}; known: {sorted(DOMAINS)}")
    return render(DOMAINS[domain], attack_of(domain, index), sample_rng(seed, domain, index), size)


def build_faces(root, params, samples, extra=None):
    """Write root/<domain>/<split>/<real|fake>/<index>_<attack>.png for each
    (domain, index, split, attack, image()) of `samples`, one root/manifest.csv (HEADER; paths
    relative to root) and root/index.json (version, params, counts per domain, split and
    attack, and `extra`), and return that index. A folder whose index.json has the same version
    and params is reused as it is; otherwise its old images are removed first."""
    root, index_path = Path(root), Path(root) / "index.json"
    if index_path.exists() and (root / "manifest.csv").exists():
        old = json.loads(index_path.read_text())
        if old.get("version") == VERSION and old.get("params") == params:
            return old
    t0, rows, counts = time.perf_counter(), [], {}
    for name, i, split, attack, image in samples:
        if name not in counts:
            shutil.rmtree(root / name, ignore_errors=True)  # no stale images from other params
        label = "real" if attack == "real" else "fake"
        rel = f"{name}/{split}/{label}/{i:05d}_{attack}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image().save(root / rel)
        rows.append((rel, label, attack, name, split))
        per_split = counts.setdefault(name, {}).setdefault(split, {})
        per_split[attack] = per_split.get(attack, 0) + 1
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    index = dict(version=VERSION, params=params, manifest="manifest.csv", counts=counts,
                 **(extra or {}), build_seconds=round(time.perf_counter() - t0, 2))
    index_path.write_text(json.dumps(index, indent=1))     # written last: marks a complete build
    return json.loads(index_path.read_text())


def make_face_corpora(root, seed=0, size=64, n_per_domain=None, quick=False):
    """The four domains through build_faces, and their index (params, protocols, traces, each
    domain's covariates; counts). n_per_domain: images per domain, an int or {role: n}
    (default DEFAULT_N); quick: QUICK_N images per domain at QUICK_SIZE px (tests)."""
    size = QUICK_SIZE if quick else size
    n = n_per_domain or (QUICK_N if quick else DEFAULT_N)
    n = {role: n for role in SPLITS} if isinstance(n, int) else dict(n)
    samples = ((name, i, split_of(name, i, n[dom.role]), attack_of(name, i),
                lambda name=name, i=i: render_face(seed, name, i, size))
               for name, dom in DOMAINS.items() for i in range(n[dom.role]))
    return build_faces(root, dict(seed=seed, size=size, n_per_domain=n), samples,
                       dict(protocols=PROTOCOLS, traces=TRACES,
                            domains={name: asdict(dom) for name, dom in DOMAINS.items()}))
