"""The broad face pool the face route's stand-in is pre-trained on (fas_standin.py).

A pre-trained VLM has seen faces under countless cameras, lights and rooms before anyone
fine-tunes it on CeFA or CASIA-SURF, and pictures of prints, screens, masks and make-up among
them. The pool stands in for that experience: every image gets its own room and camera, drawn
from broad ranges (`pool_room`), and its own presentation, bona fide or any of the ten attack
types of synth_faces.py (the targets' too: a VLM's pre-training is not restricted to the
source's attack types). No room copies a corpus domain: a draw whose background has a domain's
style and a colour within ROOM_MARGIN of that domain's is drawn again, so the corpus domains
stay unseen settings for the stand-in, as the real data sets are for a web-trained VLM.

Each image depends only on (seed, index, size). The images are written like the corpus
(synth_faces.build_faces: PNG files, manifest.csv, index.json), domain "pool", splits train/dev.
"""
import zlib
from pathlib import Path

import numpy as np

from synth_faces import DOMAINS, TRACES, Domain, build_faces, render, role_split

POOL = "pool"                       # the pool's domain name in the manifest
ATTACKS = tuple(TRACES)             # all ten attack types
STYLES = ("flat", "gradient", "dark", "clutter")
ROOM_MARGIN = 0.25                  # least RGB distance to a domain's background of the same style
DEFAULT_POOL_N, QUICK_POOL_N = 8000, 96


def too_close(style: str, rgb) -> bool:
    """True when a background of `style` and colour `rgb` copies a corpus domain's room."""
    return any(dom.bg == style and np.linalg.norm(np.subtract(rgb, dom.bg_rgb)) < ROOM_MARGIN
               for dom in DOMAINS.values())


def pool_room(rng: np.random.Generator) -> Domain:
    """One random room and camera, broad enough to hold every corpus domain's covariates in its
    range (light from any side, flat to contrasty; exposure, colour cast, sensor noise and
    resolution, JPEG or none) without copying any domain's room (`too_close`)."""
    while True:
        style, rgb = STYLES[rng.integers(len(STYLES))], tuple(rng.uniform(0.05, 0.85, 3))
        if not too_close(style, rgb):
            break
    return Domain(POOL, ATTACKS, style, rgb, light_az=rng.uniform(0, 360),
                  light_spread=rng.uniform(5, 60), ambient=rng.uniform(0.2, 0.65),
                  gain=rng.uniform(0.8, 1.2), cast=tuple(rng.uniform(0.88, 1.12, 3)),
                  noise=rng.uniform(0.5, 7.0), res=rng.uniform(0.5, 1.0),
                  jpeg=int(rng.choice([0, 60, 70, 80, 90])))


def pool_attack(index: int, rng: np.random.Generator) -> str:
    """Even indices bona fide, odd ones an attack type drawn uniformly (half the pool is real)."""
    return "real" if index % 2 == 0 else ATTACKS[rng.integers(len(ATTACKS))]


def render_pool_face(seed: int, index: int, size: int):
    """(PIL image, attack) of pool image `index`: its own room, camera and presentation."""
    rng = np.random.default_rng([seed, zlib.crc32(POOL.encode()), index])
    room, attack = pool_room(rng), pool_attack(index, rng)
    return render(room, attack, rng, size), attack


def make_face_pool(root, seed: int = 0, size: int = 112, n: int = DEFAULT_POOL_N) -> dict:
    """Write the pool (n images, 85 % train / 15 % dev) under root and return its index;
    a pool with the same (seed, size, n) is reused."""
    def samples():
        for i in range(n):
            image, attack = render_pool_face(seed, i, size)
            yield POOL, i, role_split(POOL, i, n), attack, lambda image=image: image
    return build_faces(Path(root), dict(seed=seed, size=size, n=n), samples(),
                       dict(room_margin=ROOM_MARGIN))
