"""face_pool.py: the stand-in's broad pool never copies a corpus room, is deterministic, holds
every attack type with half bona fide, and is written and reused like the corpus."""
import csv

import numpy as np
import pytest

import face_pool as fp
from synth_faces import DOMAINS, TRACES


def test_no_pool_room_copies_a_domain_room():
    rooms = [fp.pool_room(np.random.default_rng([5, i])) for i in range(2000)]
    for room in rooms:
        for dom in DOMAINS.values():
            if room.bg == dom.bg:     # same style: the colour must be ROOM_MARGIN away
                assert np.linalg.norm(np.subtract(room.bg_rgb, dom.bg_rgb)) >= fp.ROOM_MARGIN
    # and the draws are broad: every style, light from all sides, cameras from 0.5x to 1x
    assert {r.bg for r in rooms} == set(fp.STYLES)
    az = np.array([r.light_az for r in rooms])
    assert az.min() < 20 and az.max() > 340
    res = np.array([r.res for r in rooms])
    assert res.min() < 0.55 and res.max() > 0.95
    # a colour right on a domain's background is refused, one far from all is not
    assert fp.too_close("dark", DOMAINS["hqwmca_like"].bg_rgb)
    assert not fp.too_close("dark", (0.8, 0.1, 0.8))


def test_pool_faces_are_deterministic_and_half_real():
    a, atk_a = fp.render_pool_face(1, 7, 56)
    b, atk_b = fp.render_pool_face(1, 7, 56)
    assert atk_a == atk_b and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(fp.render_pool_face(2, 7, 56)[0]))
    attacks = [fp.pool_attack(i, np.random.default_rng(i)) for i in range(4000)]
    assert all(a == "real" for a in attacks[::2])
    fakes = attacks[1::2]
    assert set(fakes) == set(TRACES) == set(fp.ATTACKS)
    share = [fakes.count(a) / len(fakes) for a in fp.ATTACKS]    # uniform: 0.1 each
    assert max(abs(s - 0.1) for s in share) < 0.025               # 2000 draws: sd 0.007


def test_make_face_pool_writes_and_reuses(tmp_path):
    index = fp.make_face_pool(tmp_path, seed=0, size=28, n=40)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {r["domain"] for r in rows} == {fp.POOL}
    assert [r["split"] for r in rows] == ["train"] * 34 + ["dev"] * 6      # 85 % / 15 %
    assert all((tmp_path / r["path"]).is_file() for r in rows)
    assert sum(sum(c.values()) for c in index["counts"][fp.POOL].values()) == 40
    stamp = (tmp_path / "index.json").stat().st_mtime_ns
    assert fp.make_face_pool(tmp_path, seed=0, size=28, n=40) == index
    assert (tmp_path / "index.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("n", [7, 20])
def test_pool_attack_types_match_the_manifest(tmp_path, n):
    fp.make_face_pool(tmp_path, seed=3, size=28, n=n)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        assert r["attack"] == fp.render_pool_face(3, i, 28)[1]
        assert r["label"] == ("real" if r["attack"] == "real" else "fake")
