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
    assert len(rows) - 1 == sum(n[d.role] for d in DOMAINS.values()) == sf.QUICK_N * 4
    on_disk = {p.relative_to(root).as_posix() for p in root.glob("*/*/*/*.png")}
    assert on_disk == {r[0] for r in rows[1:]}
    for path, label, attack, domain, split in rows[1:]:
        assert path.split("/")[:3] == [domain, split, label]
        assert label == ("real" if attack == "real" else "fake")
        assert attack == "real" or attack in DOMAINS[domain].attacks
        assert split in [s for s, _ in sf.SPLITS[DOMAINS[domain].role]]
    # index.json counts agree with the manifest
    for domain, per_split in index["counts"].items():
        for split, counts in per_split.items():
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


def test_sizes_by_role(tmp_path):
    index = sf.make_face_corpora(tmp_path, seed=0, size=28, n_per_domain={"source": 10,
                                                                          "target": 5})
    assert {d: sum(sum(c.values()) for c in per.values()) for d, per in index["counts"].items()
            } == {d: 10 if dom.role == "source" else 5 for d, dom in DOMAINS.items()}
    # the default: source test sets of 200 images, target test sets of 240
    assert sf.DEFAULT_N["source"] * dict(sf.SPLITS["source"])["test"] == 200
    assert sf.DEFAULT_N["target"] * dict(sf.SPLITS["target"])["test"] == 240


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


def test_attack_cycle_follows_the_weights():
    for name, dom in DOMAINS.items():
        cycle = sf.attack_cycle(dom)
        weights = dom.weights or (1,) * len(dom.attacks)
        assert [cycle.count(a) for a in dom.attacks] == list(weights), name
        spoofs = [attack_of(name, i) for i in range(1, 2 * len(cycle) * 3, 2)]
        assert spoofs == list(cycle) * 3                    # odd indices walk the cycle
        # each split of a default-size corpus holds each type in its weight's share, within 1
        n = sf.DEFAULT_N[dom.role]
        for split, _ in sf.SPLITS[dom.role]:
            spoofs = [attack_of(name, i) for i in range(n)
                      if sf.split_of(name, i, n) == split and i % 2]
            for a, w in zip(dom.attacks, weights):
                assert abs(spoofs.count(a) - w * len(spoofs) / len(cycle)) <= 1, (name, split, a)
    with pytest.raises(ValueError, match="weights"):
        sf.attack_cycle(sf.Domain("target", ("print", "cut"), "flat", (0.5,) * 3, 0, 0, 0.3, 1,
                                  (1, 1, 1), 0, 1, weights=(1,)))


def test_each_target_holds_about_half_its_spoofs_in_source_attack_types():
    """Computed from the weights: HQ-WMCA-like 12 print of 30 (40 %) from SURF, 12 + 2 + 2 + 2
    of 30 (60 %) from CeFA; SiW-Mv2-like 12 + 8 of 40 from SURF, 12 + 4 + 4 of 40 from CeFA."""
    expected = {"surf_to_hqwmca": 0.4, "cefa_to_hqwmca": 0.6, "surf_to_siwmv2": 0.5,
                "cefa_to_siwmv2": 0.5}
    for proto, (src, tgt) in PROTOCOLS.items():
        spoofs = [attack_of(tgt, i) for i in range(1, 2 * 120, 2)]  # 120 = 4 and 3 periods
        share = np.mean([a in DOMAINS[src].attacks for a in spoofs])
        assert share == pytest.approx(expected[proto]), proto


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
    prints, reals = images(domain, "print"), images(domain, "real")        # ratio 1.5-2.6
    assert np.mean([hf_share(x) for x in prints]) / np.mean([hf_share(x) for x in reals]) > 1.3


def test_the_coarsest_target_camera_keeps_the_dots():
    """siwmv2_like samples at 0.8 with noise and JPEG: at 112 px its prints still carry 2.6-2.8x
    the high-frequency share of its real faces (seeds 0, 1); a 0.6x sensor gave 1.75-1.83x."""
    dom = DOMAINS["siwmv2_like"]
    assert dom.res == 0.8

    def share(attack):
        idx = [i for i in range(200) if attack_of("siwmv2_like", i) == attack][:30]
        return np.mean([hf_share(lum(render_face(0, "siwmv2_like", i, 112))) for i in idx])
    assert share("print") / share("real") > 2.2


def border_rgb(img):
    """Mean colour of the 6-px frame of an image (where the room, or the print, shows)."""
    a = np.asarray(img, np.float64)
    return np.concatenate([a[:6].reshape(-1, 3), a[-6:].reshape(-1, 3),
                           a[:, :6].reshape(-1, 3), a[:, -6:].reshape(-1, 3)]).mean(0)


def test_printed_photos_are_taken_in_the_room_as_often_as_photo_room_says(monkeypatch):
    """With PHOTO_ROOM = 1 a print's frame is the domain's room (printed: within ~40 levels of
    the bona fide frames); with 0 it is some other room (far off on average)."""
    real = np.mean([border_rgb(render_face(0, "surf_like", i, SIZE)) for i in range(0, 40, 2)], 0)

    def gap(photo_room):
        monkeypatch.setattr(sf, "PHOTO_ROOM", photo_room)
        prints = [i for i in range(120) if attack_of("surf_like", i) == "print"][:20]
        return np.median([np.linalg.norm(border_rgb(render_face(0, "surf_like", i, SIZE)) - real)
                          for i in prints])
    assert gap(1.0) < 40 < gap(0.0)


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
