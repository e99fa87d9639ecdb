"""Synthetic speech corpus: determinism, the real readers, measurable artefacts, domains, comments.

measure() is checked first against signals whose answer is known in closed form (a gap of known
length, a harmonic tone of known f0, a glide over a known number of semitones, a band-limited
tone); the family tests then use it to show each artefact is really in the audio.
"""
import hashlib
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

import protocols
import rewards
import synth_speech as S

SR = S.SR


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("speech"))
    return root, S.make_speech_corpora(root, seed=0, size="quick")


def _harmonic(f0, seconds, top=4000.0):
    """Harmonic complex with instantaneous f0 (Hz, scalar or per-sample), harmonics below top."""
    f0 = np.broadcast_to(np.asarray(f0, float), (int(seconds * SR),))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return sum(np.sin(h * phase) / h * (h * f0 < top) for h in range(1, 40)) * 0.1


def _probe(monkeypatch, families, channels=("clean",), every=2):
    """A test-only set: the given families through the given channels."""
    monkeypatch.setitem(S.DOMAINS, "probe", S.SpeechSet("ood_test", "manifest", every,
                                                        tuple(families), tuple(channels), 6))
    return "probe"


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = hashlib.sha1(f.read()).hexdigest()
    return out


# ----------------------------------------------------------------------------- measure()

def test_measure_known_pause_and_pitch():
    # 0.5 s of a 200 Hz voice, 0.3 s of silence (plus a -80 dB floor), 0.5 s voice again
    rng = np.random.default_rng(0)
    x = np.concatenate([_harmonic(200, 0.5), np.zeros(int(0.3 * SR)), _harmonic(200, 0.5)])
    m = S.measure(x + 1e-5 * rng.standard_normal(len(x)))
    assert m["n_pauses"] == 1 and abs(m["longest_pause"] - 0.3) <= 0.03
    assert abs(m["f0_median"] - 200) <= 4 and m["pitch_range_st"] < 0.3
    # a short gap is not a pause; one that is too short for min_pause is ignored
    y = np.concatenate([_harmonic(200, 0.5), np.zeros(int(0.08 * SR)), _harmonic(200, 0.5)])
    assert S.measure(y)["n_pauses"] == 0


def test_measure_glide_and_bandwidth():
    # exponential glide 120 -> 240 Hz (12 semitones) over 1 s: p10..p90 spans 0.8 * 12 st
    t = np.arange(SR) / SR
    m = S.measure(_harmonic(120 * 2 ** t, 1.0))
    assert abs(m["pitch_range_st"] - 9.6) < 1.0
    assert abs(m["f0_median"] - 120 * 2 ** 0.5) < 6
    # all harmonics below 2 kHz: 99 % of the energy below 2 kHz, only window leakage above 4 kHz
    m = S.measure(_harmonic(150, 1.0, top=2000))
    assert m["bandwidth_hz"] <= 2050 and m["hf_db"] < -45


def test_stft_round_trip_and_resonators_against_direct_evaluation():
    x = np.random.default_rng(0).standard_normal(3001)
    assert np.allclose(S._istft(S._stft(x), len(x)), x, atol=1e-10)   # perfect reconstruction
    F, B = np.array([[500.0, 1500.0], [700.0, 2500.0]]), np.array([[80.0, 120.0], [100.0, 200.0]])
    z = np.exp(-2j * np.pi * S._FREQS / SR)
    want = np.ones((2, len(z)))
    for f in range(2):          # complex H(z) of each resonator, one at a time
        for k in range(2):
            r, th = np.exp(-np.pi * B[f, k] / SR), 2 * np.pi * F[f, k] / SR
            want[f] *= np.abs((1 - 2 * r * np.cos(th) + r * r)
                              / (1 - 2 * r * np.cos(th) * z + r * r * z * z))
    assert np.allclose(S._resonators(F, B), want, rtol=1e-9)
    assert np.allclose(S._resonators(F, B)[:, 0], 1.0)   # unity gain at DC


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_sample_other_seed_differs():
    a, ra = S.synth_sample(0, "target_train", 3)
    b, rb = S.synth_sample(0, "target_train", 3)
    c, _ = S.synth_sample(1, "target_train", 3)
    assert np.array_equal(a, b) and ra == rb
    assert len(a) != len(c) or not np.allclose(a, c)


def test_corpus_bytes_identical_per_seed(tmp_path, quick):
    root, _ = quick
    again = str(tmp_path / "again")
    S.make_speech_corpora(again, seed=0, size="quick")
    assert _files(again) == _files(root)
    other = str(tmp_path / "other")
    S.make_speech_corpora(other, seed=1, size=dict(target_dev=4), duration=(0.6, 1.0))
    mine = _files(root)
    assert all(h != mine[p] for p, h in _files(other).items() if p.endswith(".flac"))


def test_sample_independent_of_generation_order(tmp_path, quick):
    root, index = quick
    # only target_dev, fewer samples: its first samples are byte-identical to the full build
    alone = str(tmp_path / "alone")
    S.make_speech_corpora(alone, seed=0, size=dict(target_dev=3), duration=(0.6, 1.0))
    for name in sorted(os.listdir(os.path.join(alone, "target_dev", "flac_D"))):
        rel = os.path.join("target_dev", "flac_D", name)
        with open(os.path.join(alone, rel), "rb") as f1, open(os.path.join(root, rel), "rb") as f2:
            assert f1.read() == f2.read()
    # and a sample synthesised on its own equals the file (up to 16-bit rounding)
    x, rec = S.synth_sample(0, "ood_add", 4, duration=(0.6, 1.0))
    y, sr = sf.read(os.path.join(root, "ood_add", "wav", "ADD2023_E_00005.wav"))
    assert sr == SR and np.max(np.abs(x - y)) <= 1.01 / 32768


def test_reuse_and_rebuild(tmp_path):
    root = str(tmp_path / "c")
    S.make_speech_corpora(root, seed=0, size=dict(ood_for=4), duration=(0.6, 0.8))
    stamp = os.path.getmtime(os.path.join(root, "index.json"))
    S.make_speech_corpora(root, seed=0, size=dict(ood_for=4), duration=(0.6, 0.8))
    assert os.path.getmtime(os.path.join(root, "index.json")) == stamp   # reused
    index = S.make_speech_corpora(root, seed=0, size=dict(ood_for=2), duration=(0.6, 0.8))
    assert len(protocols.read_protocol(**{k: index["ood_for"][k] for k in ("kind", "path")})) == 2
    with pytest.raises(ValueError, match="size"):
        S.make_speech_corpora(root, size=dict(nope=3))
    with pytest.raises(ValueError, match="unknown set"):
        S.synth_sample(0, "nope", 0)
    with pytest.raises(ValueError, match="unknown channel"):
        S.channel(np.zeros(100), "radio", np.random.default_rng(0))


# ----------------------------------------------------------------------------- formats / index

def test_every_set_reads_back_with_counts_and_labels(quick):
    root, index = quick
    ann = S.load_annotations(root)
    with open(os.path.join(root, "index.json")) as f:
        on_disk = json.load(f)
    assert set(on_disk) == set(S.DOMAINS) and set(index) == set(S.DOMAINS)
    roles = {e["role"] for e in index.values()}
    assert roles == {"post", "target_train", "target_dev", "target_test", "ood_test", "reference"}
    kinds = {e["kind"] for e in index.values()}
    assert kinds == {"asvspoof2019", "asvspoof5", "in_the_wild", "fake_or_real", "add2023",
                     "manifest"}
    seen = []
    for name, e in index.items():
        samples = protocols.read_protocol(e["kind"], e["path"], e["audio_dir"])
        assert len(samples) == S.DOMAINS[name].quick == e["n_real"] + e["n_fake"]
        assert sum(s.label == "real" for s in samples) == e["n_real"] > 0 and e["n_fake"] > 0
        for s in samples:
            rec = ann[s.path]  # every sample has its annotation, same label, right set
            assert rec["label"] == s.label and rec["set"] == name
            if e["kind"] in ("asvspoof2019", "asvspoof5", "manifest") and s.label == "fake":
                assert s.attack == f"A{list(S.FAMILIES).index(rec['family']) + 1:02d}"
            assert rec["family"] in (("bonafide",) if s.label == "real" else e["families"])
            assert rec["channel"] in e["channels"]
        seen += [s.path for s in samples]
    assert sorted(seen) == sorted(ann)   # nothing annotated that no protocol lists


def test_annotation_splits_and_tags(quick):
    root, _ = quick
    ann = S.load_annotations(root).values()
    want = dict(post="train", target_train="train", target_dev="val", reference="val")
    for r in ann:
        assert r["split"] == want.get(r["set"], "test")
        assert set(r["tags"]) <= set(rewards.HIR_TAGS)
        assert (r["tags"] == []) == (r["label"] == "real")
    for tags, _ in S.FAMILIES.values():
        assert tags and set(tags) <= set(rewards.HIR_TAGS)


def test_classifier_corpus_design(quick):
    # the speech paper in miniature: the target's channels are never in the pool and it holds a
    # family the pool never saw; the OOD sets hold the pool's families (the post-trained model
    # knows them) through the pool's channels and one it never saw, never the target's
    root, index = quick
    sets = lambda name: (set(index[name]["families"]), set(index[name]["channels"]))  # noqa: E731
    pool_f, pool_c = sets("post")
    tgt_f, tgt_c = sets("target_train")
    assert sets("reference") == (pool_f, pool_c)
    assert sets("target_dev") == sets("target_test") == (tgt_f, tgt_c)
    assert not tgt_c & pool_c and tgt_f - pool_f
    ood = [name for name, e in index.items() if e["role"] == "ood_test"]
    assert len(ood) >= 3
    for name in ood:
        f, c = sets(name)
        assert f <= pool_f and not c & tgt_c
    assert any(sets(name)[1] - pool_c for name in ood)
    # and the written samples really carry them
    ann = S.load_annotations(root).values()
    for name in index:
        written = {r["channel"] for r in ann if r["set"] == name}
        assert written <= sets(name)[1]
    assert {r["family"] for r in ann if r["set"].startswith("target")} - pool_f


# ----------------------------------------------------------------------------- artefacts

@pytest.fixture(scope="module")
def clean_measures():
    """measure() of 12 clean clips of bona fide and of every family (1-2 s)."""
    mp = pytest.MonkeyPatch()
    name = _probe(mp, S.FAMILIES, every=len(S.FAMILIES) + 1)
    out = {}
    for i in range(12 * (len(S.FAMILIES) + 1)):
        x, rec = S.synth_sample(0, name, i)
        out.setdefault(rec["family"], []).append((S.measure(x), x))
    mp.undo()
    return out


def _stat(out, family, key):
    return np.array([m[key] for m, _ in out[family]])


def test_flat_prosody_has_flat_pitch(clean_measures):
    flat, real = (_stat(clean_measures, f, "pitch_range_st") for f in ("flat_prosody", "bonafide"))
    assert flat.max() < 1.5 and np.median(real) > 3.0 and np.median(real) > 4 * np.median(flat)


def test_band_limited_has_no_energy_above_4khz(clean_measures):
    band, real = (_stat(clean_measures, f, "hf_db") for f in ("band_limited", "bonafide"))
    assert band.max() < -55 and real.min() > -45  # > 10 dB apart, clip by clip


def test_no_pause_family_never_pauses(clean_measures):
    assert _stat(clean_measures, "no_pause", "longest_pause").max() < 0.15
    assert (_stat(clean_measures, "bonafide", "n_pauses") > 0).mean() >= 0.4


def test_no_breath_pauses_are_digital_silence(clean_measures):
    def quietest(x):  # energy of the quietest 20 ms frame relative to the whole clip, dB
        fr = x[:len(x) // 320 * 320].reshape(-1, 320).astype(float)
        return 10 * np.log10(np.mean(fr ** 2, axis=1).min() / np.mean(x.astype(float) ** 2) + 1e-30)
    assert max(quietest(x) for _, x in clean_measures["no_breath"]) < -100
    assert min(quietest(x) for _, x in clean_measures["bonafide"]) > -80


def test_oversmoothed_has_flatter_formants(clean_measures):
    def formant_contrast(x):
        """std (dB) over 300-3500 Hz of the cepstrally smoothed log spectrum, tilt removed,
        averaged over loud frames: how sharply the formant peaks stand out."""
        P = np.abs(S._stft(x.astype(float))) ** 2
        logp = 10 * np.log10(P[P.sum(1) > 0.1 * P.sum(1).max()] + 1e-10)
        c = np.fft.irfft(logp, axis=1)
        c[:, 25:-24] = 0  # keep quefrencies < 1.5 ms: the envelope, not the harmonics
        env = np.fft.rfft(c, axis=1).real[:, 10:112].T  # (bins 300-3500 Hz, frames)
        A = np.stack([np.arange(len(env)), np.ones(len(env))], 1)
        return np.mean(np.std(env - A @ np.linalg.lstsq(A, env, rcond=None)[0], axis=0))
    smooth = [formant_contrast(x) for _, x in clean_measures["oversmoothed"]]
    real = [formant_contrast(x) for _, x in clean_measures["bonafide"]]
    assert np.median(smooth) < 0.8 * np.median(real)


def test_metronome_timeline_is_regular():
    rng, v = np.random.default_rng(0), S.speaker(0, "post", 0)
    reg, _, _ = S._timeline(rng, 2 * SR, v, dict(S.NATURAL, **S.FAMILIES["metronome"][1]))
    nat, _, _ = S._timeline(rng, 2 * SR, v, S.NATURAL)
    assert np.ptp(reg[:-1, 1]) == 0 and np.std(nat[:-1, 1]) > 0.1 * np.mean(nat[:-1, 1])


def test_loudness_and_duration_do_not_give_the_label_away(monkeypatch):
    name = _probe(monkeypatch, S.FAMILIES, channels=("clean", "gain"))
    recs = [S.synth_sample(0, name, i) for i in range(72)]
    y = [r["label"] == "real" for _, r in recs]
    for feature in ([len(x) for x, _ in recs], [np.sqrt(np.mean(x ** 2)) for x, _ in recs]):
        assert 0.3 < roc_auc_score(y, feature) < 0.7


# ----------------------------------------------------------------------------- comments

_KEYWORDS = dict(flat_prosody="monoton", metronome="metronome|regular", vocoder_buzz="buzz",
                 band_limited="muffled|band-limited", oversmoothed="smear|smooth",
                 no_pause="pause", odd_stress="stress", accent="accent",
                 no_breath="silen", bonafide="natural|pause|breath|lively|non-robotic")
_VERDICT = dict(real="genuine|real|natural|authentic",
                fake="synthesized|artificial|deepfake|generated")


def test_comments_vary_and_name_the_cues(quick, monkeypatch):
    root, _ = quick
    ann = list(S.load_annotations(root).values())
    comments = [r["comment"] for r in ann]
    assert len(set(comments)) >= 0.9 * len(comments)
    assert len({c.split(".")[0] for c in comments}) >= 6      # several openings
    for r in ann:
        c = r["comment"].lower()
        assert re.search(_KEYWORDS[r["family"]], c), (r["family"], c)
        assert re.search(_VERDICT[r["label"]], c.split(".")[0]), c
        if r["label"] == "real" and r["breaths"]:
            assert "breath" in c
        if r["channel"] == "telephone":
            assert "phone" in c
    # the numbers quoted are the measured ones
    name = _probe(monkeypatch, ("flat_prosody", "no_pause", "band_limited"))
    rng = np.random.default_rng(0)
    for i in range(1, 12, 2):  # odd indices: the fakes
        x, rec = S.synth_sample(0, name, i)
        m = S.measure(x)
        texts = {S.comment(rec, m, rng) for _ in range(12)}
        quoted = {f"{m['pitch_range_st']:.1f} semitones", f"{m['duration']:.1f} s",
                  f"{m['bandwidth_hz'] / 1000:.1f} kHz"}
        assert any(q in t for t in texts for q in quoted), texts
        assert len(texts) >= 2


def test_a_very_short_syllable_draw_never_empties_a_clip():
    # a syllable length drawn below 80 ms once ended a clip before its first syllable, and
    # synth_sample failed ("not enough values to unpack"); now it is raised to 80 ms
    class ShortDraws:
        """A generator whose scalar normal draws are all -10 (syllables of e^-2.5 = 8 %)."""
        def __init__(self):
            self.g = np.random.default_rng(0)

        def standard_normal(self, *shape):
            return -10.0 if not shape else self.g.standard_normal(*shape)

        def __getattr__(self, name):
            return getattr(self.g, name)

    v = S.speaker(0, "target_train", 0)
    for fx in (S.NATURAL, dict(S.NATURAL, pauses="none", rate=1.15)):
        syl, _, _ = S._timeline(ShortDraws(), int(1.3 * SR), v, fx)
        assert len(syl) >= 1 and (syl[:, 1] >= int(0.08 * SR)).all()
