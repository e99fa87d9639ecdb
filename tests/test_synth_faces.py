"""synth_faces.py: determinism, the manifest against the files on disk, the protocol layout, and
each physical trace measured on the images with numbers computed here (FFT, patch means), not
by the generator."""
import csv
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

import synth_faces as sf
from synth_faces import DOMAINS, HEADER, PROTOCOLS, attack_of, render_face

SIZE = 64          # trace tests render at the default size, one image at a time


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    index = sf.make_face_corpora(root, seed=3, quick=True)
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.reader(f))
    return root, index, rows


def lum(img):
    return np.asarray(img.convert("RGB"), np.float64).mean(-1)        # (H, W)


def spectrum(x):
    """|FFT| of a Hann-windowed, mean-free image and each bin's radius in cycles per pixel."""
    n = x.shape[0]
    w = np.outer(np.hanning(n), np.hanning(n))
    F = np.abs(np.fft.fftshift(np.fft.fft2((x - x.mean()) * w)))
    f = np.fft.fftshift(np.fft.fftfreq(n))
    return F, np.hypot(*np.meshgrid(f, f))


@lru_cache(maxsize=None)
def images(domain, attack, k=30, seed=0):
    """The first k images of `attack` in `domain`, picked through the public index rule.
    k = 30: with fewer, one image's luck can move a class mean by more than a trace does."""
    idx = [i for i in range(400) if attack_of(domain, i) == attack][:k]
    return [lum(render_face(seed, domain, i, SIZE)) for i in idx]


# ----------------------------------------------------------------------------- corpus on disk

def test_manifest_matches_files(corpus):
    root, index, rows = corpus
    assert tuple(rows[0]) == HEADER
    n = index["params"]["n_per_domain"]
    assert len(rows) - 1 == n * len(DOMAINS) == sf.QUICK_N * 4
    on_disk = {p.relative_to(root).as_posix() for p in root.glob("*/*/*/*.png")}
    assert on_disk == {r[0] for r in rows[1:]}
    for path, label, attack, domain, split in rows[1:]:
        assert path.split("/")[:3] == [domain, split, label]
        assert label == ("real" if attack == "real" else "fake")
        assert attack == "real" or attack in DOMAINS[domain].attacks
        assert split in [s for s, _ in sf.SPLITS[DOMAINS[domain].role]]
    # index.json counts agree with the manifest
    for domain, info in index["domains"].items():
        for split, counts in info["counts"].items():
            for attack, c in counts.items():
                assert c == sum(r[2:5] == [attack, domain, split] for r in rows[1:])


def test_images_are_rgb_of_requested_size(corpus):
    root, index, rows = corpus
    for path, *_ in rows[1:]:
        with Image.open(root / path) as im:
            assert im.mode == "RGB" and im.size == (sf.QUICK_SIZE, sf.QUICK_SIZE)
    assert render_face(0, "surf_like", 1, 28).size == (28, 28)


def test_reuse_and_rebuild(corpus, tmp_path):
    root, index, _ = corpus
    stamp = (root / "index.json").stat().st_mtime_ns
    assert sf.make_face_corpora(root, seed=3, quick=True) == index
    assert (root / "index.json").stat().st_mtime_ns == stamp           # reused, not rebuilt
    sf.make_face_corpora(tmp_path, seed=3, size=28, n_per_domain=10)
    sf.make_face_corpora(tmp_path, seed=3, size=28, n_per_domain=6)    # other params: rebuild
    with open(tmp_path / "manifest.csv") as f:
        assert len(f.readlines()) - 1 == 24
    assert len(list(tmp_path.glob("*/*/*/*.png"))) == 24               # no stale images left


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_pixels_in_any_order(corpus):
    root, index, rows = corpus
    size = index["params"]["size"]
    for path, _, _, domain, _ in reversed(rows[1::7]):                 # another order, alone
        i = int(path.rsplit("/", 1)[1].split("_")[0])
        on_disk = np.asarray(Image.open(root / path))
        assert np.array_equal(np.asarray(render_face(3, domain, i, size)), on_disk)
    a, b = render_face(3, "cefa_like", 5, size), render_face(4, "cefa_like", 5, size)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_split_of_proportions():
    # source: 60 / 20 / 20 of 100, target: 20 / 80, contiguous ranges
    src = [sf.split_of("cefa_like", i, 100) for i in range(100)]
    assert src == ["train"] * 60 + ["dev"] * 20 + ["test"] * 20
    tgt = [sf.split_of("siwmv2_like", i, 100) for i in range(100)]
    assert tgt == ["dev"] * 20 + ["test"] * 80


def test_unknown_domain_is_an_error():
    with pytest.raises(ValueError, match="unknown face domain"):
        render_face(0, "casia_like", 0)


# ----------------------------------------------------------------------------- protocols

def test_protocols_and_unseen_attacks(corpus):
    _, _, rows = corpus
    # the paper's four: CeFa / CASIA-SURF -> HQ-WMCA / SiW-Mv2
    assert sorted(PROTOCOLS.values()) == sorted((s, t) for s in ("cefa_like", "surf_like")
                                                for t in ("hqwmca_like", "siwmv2_like"))
    for src, tgt in PROTOCOLS.values():
        assert DOMAINS[src].role == "source" and DOMAINS[tgt].role == "target"
    seen = {r[2] for r in rows[1:] if DOMAINS[r[3]].role == "source"}
    unseen = {r[2] for r in rows[1:] if DOMAINS[r[3]].role == "target"} - seen
    assert len(unseen & {"makeup", "half_mask", "paper_glasses", "mannequin", "tattoo", "wig"}) >= 4
    for domain in ("hqwmca_like", "siwmv2_like"):                     # each target has some
        assert {r[2] for r in rows[1:] if r[3] == domain and r[4] == "test"} & unseen
    assert {r[4] for r in rows[1:] if DOMAINS[r[3]].role == "target"} == {"dev", "test"}


def test_domains_differ_in_colour_and_brightness(corpus):
    root, _, rows = corpus
    mean = {d: np.mean([np.asarray(Image.open(root / r[0]), np.float64).mean((0, 1))
                        for r in rows[1:] if r[3] == d and r[1] == "real"], 0) for d in DOMAINS}
    names = list(DOMAINS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.linalg.norm(mean[a] - mean[b]) > 10, (a, b, mean[a], mean[b])


# ----------------------------------------------------------------------------- traces

def hf_share(x):
    """Share of the spectral energy above 0.25 cycles/px (halftone dots of pitch 3-4.5 px
    put theirs at sqrt(2)/pitch = 0.31-0.47)."""
    F, r = spectrum(x)
    return (F[r > 0.25] ** 2).sum() / (F[r > 0.02] ** 2).sum()


def periodic_peak(x, lo=0.06, hi=0.22):
    """Largest |F| in the band lo..hi cycles/px over the median |F| of its own radius: a
    periodic pattern (moire) stands out of its ring, a face's broadband content does not."""
    F, r = spectrum(x)
    ring = np.round(r * x.shape[0]).astype(int)
    med = np.array([np.median(F[ring == k]) for k in range(ring.max() + 1)])
    band = (r >= lo) & (r <= hi)
    return (F / med[ring])[band].max()


@pytest.mark.parametrize("domain", [d for d in DOMAINS if DOMAINS[d].res == 1.0])
def test_print_has_halftone_energy(domain):
    # only at full sensor resolution: a 0.6x sensor cannot resolve 3-4.5 px dots (siwmv2_like)
    prints, reals = images(domain, "print"), images(domain, "real")        # ratio 1.7-2.5
    assert np.mean([hf_share(x) for x in prints]) / np.mean([hf_share(x) for x in reals]) > 1.3


@pytest.mark.parametrize("domain", [d for d in DOMAINS if "replay" in DOMAINS[d].attacks])
def test_replay_has_periodic_moire_peak(domain):
    replays, reals = images(domain, "replay"), images(domain, "real")
    # seeds 0 and 1 give ratios 1.19-1.26: a faint trace, as on real replays, but there
    ratio = np.mean([periodic_peak(x) for x in replays]) / np.mean([periodic_peak(x) for x in reals])
    assert ratio > 1.1


def cheek_contrast(x):
    """|left cheek - right cheek| mean luminance at the average face position: the shading a
    side light casts across a round face."""
    n, r = x.shape[0], max(1, x.shape[0] // 24)
    y = round((0.46 + 0.25 * 0.275) * n)
    left, right = (x[y - r:y + r + 1, c - r:c + r + 1].mean()
                   for c in (round((0.5 + s * 0.6 * 0.21) * n) for s in (-1, 1)))
    return abs(left - right)


@pytest.mark.parametrize("domain", ["cefa_like", "hqwmca_like"])     # both lit from the side
def test_mask_has_flatter_shading(domain):
    masks, reals = images(domain, "mask"), images(domain, "real")          # ratio 0.4-0.5
    ratio = np.mean([cheek_contrast(x) for x in masks]) / np.mean([cheek_contrast(x) for x in reals])
    assert ratio < 0.75
