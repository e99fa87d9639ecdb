"""Synthetic speech-deepfake corpus for the CPU miniatures (numpy + soundfile only).

Stands in for the real corpora of the classifier route (Wang, Ge, Yamagishi 2026: post-training
pool, target domain, out-of-domain test sets, drift reference) and gives the reasoning route
(HIR-SDD, Dvirniak et al. 2026) HIR tags and human-like comments. Every set is written in a real
protocol format (ASVspoof 2019 LA, ASVspoof 5, In-the-Wild, Fake-or-Real, ADD 2023, CSV manifest),
so the miniatures go through the same readers (protocols.read_protocol) as the real corpora.

Bona fide "speech" is a source-filter signal: a glottal pulse train following a pitch contour
(phrase declination, accents on stressed syllables, phrase-final fall or rise, jitter, shimmer),
moving formant resonators (a vowel target per syllable), syllable envelopes with fricative onsets,
phrases separated by pauses that often hold a breath, and a faint noise floor. Each spoof family
changes one aspect of that generator (FAMILIES) and records the HIR-SDD tags a listener would give
it. Level is normalised before the channel, with the same law for every label and family, so
neither loudness nor duration separates real from fake. The corpus is not tuned for any method.

Departures, said plainly:
1. There are no words: INCORRECT_ABBREVIATIONS is never produced, and "stress" and "accent" are
   prosodic and formant changes of vowel-like syllables, not of a language.
2. The formant resonators are applied per STFT frame (32 ms, hop 8 ms) as their magnitude
   response, a time-varying zero-phase filter: a per-sample IIR recursion in Python would be
   ~100x slower, and formants move far slower than the frame rate.
3. Clips are short (1-2 s) and phrases shorter than in real speech (0.3-0.7 s) so that a clip
   usually holds a pause; the miniature must build and train on 2 CPU cores.
4. Comments are templated from the family, the channel and properties measured on the final audio
   (speech_comments.py: measure(), comment()); they stand in for HIR-SDD's human annotations.
"""
import json
import multiprocessing
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speech_comments import SR, comment, measure

VERSION = 2  # 2: syllables of at least 80 ms (a short draw no longer ends the clip)
N_FFT, HOP = 512, 128
_WIN = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))  # sqrt periodic Hann
_FREQS = np.fft.rfftfreq(N_FFT, 1 / SR)  # (257,)
# Vowel formant targets F1..F3 (Hz, adult male, Peterson & Barney-like).
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                    [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690]], float)
_BANDWIDTHS = np.array([70.0, 100.0, 130.0, 200.0, 280.0, 400.0, 500.0])
_HIGH = np.array([3500.0, 4500.0, 5500.0, 6500.0])  # F4..F7: the higher poles carry energy > 4 kHz

# The bona fide generator; `perturb` scales jitter and shimmer together.
NATURAL = dict(prosody=1.0, perturb=1.0, timing="natural", pauses="natural", breath=True,
               floor=True, stress="lexical", accent=False, source="glottal", phase=0.0,
               smooth=0, lowpass=False, rate=1.0)
# family -> (HIR-SDD tags it earns, changes to NATURAL)
FAMILIES = {
    "flat_prosody": (("MONOTONY_OF_STYLE", "STRANGE_INTONATION"), dict(prosody=0.06, perturb=0.3)),
    "metronome": (("UNNATURAL_PAUSES",), dict(timing="regular")),
    "vocoder_buzz": (("STRANGE_VOICE",), dict(source="pulse", perturb=0.0, phase=0.5)),
    "band_limited": (("OTHER",), dict(lowpass=True)),
    "oversmoothed": (("STRANGE_VOICE", "OTHER"), dict(smooth=4, breath=False)),
    "no_pause": (("TOO_LONG_WITH_NO_PAUSE",), dict(pauses="none", breath=False, rate=1.15)),
    "odd_stress": (("INCORRECT_WORD_STRESS",), dict(stress="odd")),
    "accent": (("STRANGE_ACCENT",), dict(accent=True)),
    "no_breath": (("UNNATURAL_PAUSES", "OTHER"), dict(breath=False, floor=False)),
}
CHANNELS = ("clean", "noise", "reverb", "telephone", "gain")

@dataclass(frozen=True)
class SpeechSet:
    """One set of a synthetic corpus: what it holds and how it is written.

    role: what the experiment uses it for; kind: the protocol format (a reader of data.py);
    every: every k-th sample is bona fide; families, channels: the spoof families and the
    channels drawn for it; size, quick: sample counts of the default and the quick build;
    split: its HIR annotation split (train / val / test); ids: (letter in the utterance ids,
    split in the protocol file name) for the ASVspoof formats."""
    role: str
    kind: str
    every: int
    families: tuple
    channels: tuple
    size: int
    quick: int = 6
    split: str = "test"
    ids: tuple = ("E", "")


# The classifier route's corpus (the speech paper's Table 1 in miniature). The post-training
# pool holds the families a 1-2 s clip can show by its spectrum (vocoder_buzz, band_limited,
# oversmoothed, no_breath, accent; flat_prosody, metronome and odd_stress need longer speech)
# through clean and gain channels: the post-trained detector learns, among other cues, that a
# missing high band and digital silence in the pauses mean "fake". The target domain (the
# stand-in for Deepfake-Eval-2024) is telephone and noisy speech, whose bona fide clips have
# exactly those traits (a 300-3400 Hz band, pauses that mu-law turns into digital silence or
# noise fills), and whose fakes include a family the pool never saw (no_pause): the post-trained
# detector is poor there and must unlearn part of what it knows to improve. The out-of-domain
# sets hold the pool's families with new speakers, through the pool's channels and a new one
# (reverb): the post-trained detector is good there, so there is something to forget. Other
# routes define their own tables of SpeechSet.
_POOL = ("vocoder_buzz", "band_limited", "oversmoothed", "no_breath", "accent")
_POOL_CH = ("clean", "gain")
_TARGET = ("vocoder_buzz", "oversmoothed", "accent", "no_pause")
_TARGET_CH = ("telephone", "noise")
DOMAINS = {
    "post": SpeechSet("post", "asvspoof2019", 3, _POOL, _POOL_CH, 2400, 18, "train",
                      ("T", "train.trn")),
    "reference": SpeechSet("reference", "asvspoof2019", 3, _POOL, _POOL_CH, 300, 9, "val",
                           ("D", "dev.trl")),
    "target_train": SpeechSet("target_train", "asvspoof5", 2, _TARGET, _TARGET_CH, 600, 12,
                              "train", ("T", "train")),
    "target_dev": SpeechSet("target_dev", "asvspoof5", 2, _TARGET, _TARGET_CH, 300, 8, "val",
                            ("D", "dev.track_1")),
    "target_test": SpeechSet("target_test", "asvspoof5", 2, _TARGET, _TARGET_CH, 300, 8,
                             ids=("E", "eval.track_1")),
    "ood_for": SpeechSet("ood_test", "fake_or_real", 2, ("vocoder_buzz", "band_limited"),
                         _POOL_CH, 300),
    "ood_add": SpeechSet("ood_test", "add2023", 2, ("oversmoothed", "no_breath", "accent"),
                         _POOL_CH, 300),
    "ood_itw": SpeechSet("ood_test", "in_the_wild", 2, ("no_breath", "band_limited",
                                                         "vocoder_buzz"), ("reverb",), 300),
    "ood_manifest": SpeechSet("ood_test", "manifest", 2, _POOL, _POOL_CH + ("reverb",), 300),
}
QUICK_DURATION = (0.6, 1.0)
N_SPEAKERS = 8  # per set; speakers are disjoint across sets, shared by real and fake


def _rng(seed, set_name, index, stream):
    """Generator for one (set, index, stream): a sample never depends on what else is generated."""
    return np.random.default_rng([seed, zlib.crc32(set_name.encode()), index, stream])


def _smooth(x, k):
    """Moving average of odd width k along axis 0 (edges repeated), via cumsum."""
    c = np.cumsum(np.pad(x, [(k // 2 + 1, k // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge"), 0)
    return (c[k:] - c[:-k]) / k


def _stft(x):
    """(n,) -> (frames, N_FFT/2+1); frame f is centred on sample f*HOP."""
    xp = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
    return np.fft.rfft(np.lib.stride_tricks.sliding_window_view(xp, N_FFT)[::HOP] * _WIN, axis=1)


def _istft(X, n):
    """Overlap-add inverse of _stft, divided by the summed squared window (2 inside the clip,
    where four sqrt-Hann^2 = Hann frames overlap; less near the edges)."""
    fr = np.fft.irfft(X, N_FFT, axis=1) * _WIN  # (F, N)
    idx = (np.arange(len(fr))[:, None] * HOP + np.arange(N_FFT)).ravel()
    wsum = np.bincount(idx, np.tile(_WIN ** 2, len(fr)))
    return (np.bincount(idx, fr.ravel()) / np.maximum(wsum, 1e-3))[N_FFT // 2:N_FFT // 2 + n]


def _resonators(F, B):
    """|H| of cascaded 2-pole resonators: F, B (frames, K) in Hz -> (frames, bins).

    H(z) = (1 + a1 + a2) / (1 + a1 z^-1 + a2 z^-2), a1 = -2r cos(2 pi F/SR), a2 = r^2,
    r = exp(-pi B/SR): Klatt's (1980) formant resonator, unity gain at DC. On the unit circle
    |1 + a1 z^-1 + a2 z^-2|^2 = 1 + a1^2 + a2^2 + 2 a1 (1 + a2) cos w + 2 a2 cos 2w (real math)."""
    r = np.exp(-np.pi * B / SR)[..., None]  # (frames, K, 1)
    a1, a2, w = -2 * r * np.cos(2 * np.pi * F / SR)[..., None], r * r, 2 * np.pi * _FREQS / SR
    den = 1 + a1 * a1 + a2 * a2 + 2 * a1 * (1 + a2) * np.cos(w) + 2 * a2 * np.cos(2 * w)
    return np.sqrt(np.prod((1 + a1 + a2) ** 2 / den, axis=1))


def _fft_len(n):
    """A power of two >= n: clip lengths are arbitrary, and FFTs of prime lengths are slow."""
    return 1 << (int(n) - 1).bit_length()


def _band(x, lo, hi, edge=150.0):
    """Zero-phase band-pass lo..hi Hz (lo=0: low-pass) by an FFT mask with raised-cosine edges."""
    m = _fft_len(len(x))
    f = np.fft.rfftfreq(m, 1 / SR)
    g = np.clip((hi + edge - f) / edge, 0, 1) * np.clip((f - lo + edge) / edge, 0, 1)
    return np.fft.irfft(np.fft.rfft(x, m) * (0.5 - 0.5 * np.cos(np.pi * g)), m)[:len(x)]


def speaker(seed, set_name, spk):
    """A speaker's voice, fixed per (seed, set, speaker id)."""
    r = _rng(seed, set_name, spk, 2)
    female = bool(r.random() < 0.5)
    return dict(female=female, f0=r.uniform(165, 250) if female else r.uniform(90, 145),
                vtl=r.uniform(1.08, 1.2) if female else r.uniform(0.9, 1.02),
                rate=r.uniform(3.8, 5.2), jitter=r.uniform(0.006, 0.015),
                shimmer=r.uniform(0.03, 0.08), breathy=r.uniform(0.02, 0.08),
                decl=r.uniform(1.5, 4.0), accent=r.uniform(1.5, 4.0))


_MIN_SYL = int(0.08 * SR)  # the shortest syllable, samples


def _timeline(rng, n, v, fx):
    """-> syllables (S, 5): start, length, stressed, vowel, fricative (samples); pauses
    [(start, length)]; index of each phrase's last syllable. Only syllables loop in Python."""
    t, end = int(rng.uniform(0.04, 0.1) * SR), n - int(rng.uniform(0.04, 0.1) * SR)
    base = SR / (v["rate"] * fx["rate"])
    regular, odd = fx["timing"] == "regular", fx["stress"] == "odd"
    syl, pauses, phrase_end = [], [], []
    while t < end:
        n_syl = 4 if regular else n if fx["pauses"] == "none" else rng.uniform(0.3, 0.7) * SR / base
        count = 0
        while count < n_syl and t < end:  # words of 1-3 syllables, stress placed per word
            w = int(min(rng.integers(1, 4), max(1, np.ceil(n_syl - count))))
            pos = 0 if rng.random() < 0.75 else min(1, w - 1)
            if odd:  # stress on the last syllable, often on two in a row
                pos = w - 1 if rng.random() < 0.7 else int(rng.integers(w))
            for j in range(w):
                stressed = j == pos or (odd and rng.random() < 0.3)
                L = int(base if regular else base * np.exp(0.25 * rng.standard_normal())
                        * (1.3 if stressed and not odd else 1.0))
                if end - t < _MIN_SYL:  # no room for one more syllable: the speech ends here
                    t = end
                    break
                # a very short draw is raised to 80 ms (it once ended a clip before its first
                # syllable); the clip may end mid-syllable: the last one is shortened
                L = min(max(L, _MIN_SYL), end - t)
                syl.append((t, L, stressed, rng.integers(len(_VOWELS)), rng.random() < 0.45))
                t, count = t + L, count + 1
        phrase_end.append(len(syl) - 1)
        P = int((0.3 if regular else np.exp(rng.uniform(np.log(0.2), np.log(0.55)))) * SR)
        if fx["pauses"] == "none" or t + P + 0.1 * SR >= end:  # speech always follows a pause
            break
        pauses.append((t, P))
        t += P
    return np.array(syl, dtype=float), pauses, phrase_end


def _voice(rng, n, v, fx):
    """Render one utterance before the channel -> (audio (n,), number of breaths)."""
    syl, pauses, phrase_end = _timeline(rng, n, v, fx)
    s0, L, stressed, vowel, fric = syl.T  # (S,) each
    mid, tt, p = s0 + L / 2, np.arange(n), fx["prosody"]
    k = np.clip(np.searchsorted(s0, tt, side="right") - 1, 0, len(s0) - 1)  # syllable of sample
    inside = tt < s0[k] + L[k]
    u = np.where(inside, (tt - s0[k]) / L[k], 0.0)  # position within the syllable, 0..1
    c = np.where(fric[k] > 0, 0.3, 0.0)  # a fricative onset takes the first 30 %
    gain = np.where(stressed > 0, 1.6 if fx["stress"] == "odd" else 1.0, 0.6)
    voiced = inside * gain[k] * np.sin(np.pi * np.clip((u - c) / (1 - c), 0, 1)) ** 0.5
    noisy = inside * (u < c) * 0.15 * np.sin(np.pi * np.clip(u / np.maximum(c, 1e-9), 0, 1))

    # Pitch targets (semitones) at syllable centres: declination, accents, phrase-final turn.
    first = np.concatenate([[0], np.array(phrase_end[:-1]) + 1]).astype(int)
    pos = np.arange(len(s0)) - first[np.searchsorted(phrase_end, np.arange(len(s0)))]
    st = p * (-v["decl"] * pos / 4 + v["accent"] * stressed + 0.7 * rng.standard_normal(len(s0)))
    if fx["stress"] == "odd":  # stressed syllables dip instead of rising
        st -= 2 * p * v["accent"] * stressed
    st[phrase_end] += p * rng.choice([-2.5, 3.0], size=len(phrase_end), p=[0.7, 0.3])
    drift = np.interp(tt, np.arange(n // 1600 + 2) * 1600, rng.standard_normal(n // 1600 + 2))
    f0 = v["f0"] * 2 ** ((_smooth(np.interp(tt, mid, st), 801) + 0.4 * p * drift) / 12)
    # Jitter and shimmer: one random factor per glottal period (period index of the smooth phase).
    per = np.floor(np.cumsum(f0) / SR).astype(int)
    jit, shim = rng.standard_normal((2, per[-1] + 2))
    phase = np.cumsum(f0 * (1 + fx["perturb"] * v["jitter"] * jit[per])) / SR
    per, frac = np.floor(phase).astype(int), phase % 1.0
    if fx["source"] == "pulse":  # vocoder-like buzz: a bare impulse train, no aspiration
        src = np.diff(per, prepend=0) * 4.0
    else:  # derivative of a Rosenberg glottal flow pulse (opening 40 %, closing 8 %)
        flow = np.where(frac < 0.4, 0.5 - 0.5 * np.cos(np.pi * frac / 0.4),
                        np.where(frac < 0.48, np.cos(np.pi * (frac - 0.4) / 0.16), 0.0))
        src = np.diff(flow, prepend=0.0) * (1 + fx["perturb"] * v["shimmer"] * shim[per]) * 10
        src += v["breathy"] * flow * rng.standard_normal(n)  # aspiration rides the open phase

    breaths = 0  # breaths go to the noise path, in three of four pauses long enough for one
    for ps, P in pauses:
        if fx["breath"] and P > 0.22 * SR and rng.random() < 0.75:
            bl = int(P * rng.uniform(0.4, 0.7))
            noisy[ps + 400:ps + 400 + bl] += 0.06 * np.sin(np.pi * np.arange(bl) / bl) ** 2
            breaths += 1

    # Formants per STFT frame: vowel targets interpolated between syllables (coarticulation).
    fc = np.arange(n // HOP + 2) * HOP  # frame centres, as _stft frames them
    tgt = _VOWELS[vowel.astype(int)] * ([1.25, 0.75, 1.0] if fx["accent"] else 1.0)
    tgt = tgt + ([0, 400, 0] if fx["accent"] else 0)  # accent: F1 up, F2 centralised
    F = np.stack([np.interp(fc, mid, tgt[:, i]) for i in range(3)]
                 + [np.full(len(fc), h) for h in _HIGH], 1) * v["vtl"]  # (frames, 7)
    in_pause = np.interp(fc, tt, (~inside).astype(float)) > 0.5
    fric_f = np.where(in_pause, 1400.0, np.interp(fc, mid, 2500 + 3000 * rng.random(len(s0))))
    Hn = _resonators(fric_f[:, None], np.full((len(fc), 1), 1800.0))  # broad noise colouring
    Hv = _resonators(F, np.broadcast_to(_BANDWIDTHS * (3.0 if fx["smooth"] else 1.0), F.shape))
    if fx["smooth"]:  # over-smoothing (as an L2-trained acoustic model): envelopes blurred in
        k = 2 * fx["smooth"] + 1  # frequency (3x formant bandwidths) and in time (k frames)
        Hv, Hn = _smooth(Hv, k), _smooth(Hn, k)
        voiced, noisy = _smooth(voiced, k * HOP + 1), _smooth(noisy, k * HOP + 1)
    X = _stft(src * voiced) * Hv + _stft(rng.standard_normal(n) * noisy) * Hn
    if fx["phase"]:  # vocoder phase artefacts: partly random STFT phase
        X = X * np.exp(1j * fx["phase"] * rng.uniform(-np.pi, np.pi, X.shape))
    x = _istft(X, n)
    if fx["lowpass"]:  # a generator running at 8 kHz, upsampled: nothing above ~3.3-3.8 kHz
        x = _band(x, 0.0, rng.uniform(3300, 3800))
    if fx["floor"]:  # without it, pauses are digital silence
        x += 10 ** (-65 / 20) * np.sqrt(np.mean(x ** 2)) * rng.standard_normal(n)
    return x, breaths


def channel(x, name, rng):
    """Apply one channel of CHANNELS to a signal -> (audio, parameters drawn)."""
    if name == "noise":  # coloured noise ~ 1/f^a at an SNR to the whole clip
        snr, a = rng.uniform(8, 25), rng.uniform(0, 1.5)
        m = _fft_len(len(x))
        f = np.maximum(np.fft.rfftfreq(m, 1 / SR), 50)
        w = np.fft.irfft(np.fft.rfft(rng.standard_normal(m)) / f ** (a / 2), m)[:len(x)]
        return x + w * np.sqrt(np.mean(x ** 2) / np.mean(w ** 2)) * 10 ** (-snr / 20), \
            dict(snr_db=round(snr, 1))
    if name == "reverb":  # synthetic room: direct path + exponentially decaying noise tail
        rt60, drr = rng.uniform(0.25, 0.8), rng.uniform(-6, 3)  # direct-to-reverberant ratio, dB
        t = np.arange(int(rt60 * SR)) / SR
        h = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        h *= 10 ** (-drr / 20) / np.sqrt(np.sum(h ** 2))
        h[0] = 1.0
        m = _fft_len(len(x) + len(h))
        y = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:len(x)]
        return y * np.sqrt(np.mean(x ** 2) / np.mean(y ** 2)), dict(rt60_s=round(rt60, 2))
    if name == "telephone":  # 300-3400 Hz, then 8-bit mu-law companding (G.711-like)
        y, mu = _band(x, 300.0, 3400.0) / 0.5, 255.0  # full scale of the codec at 0.5
        y = np.round(np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1)) / np.log1p(mu) * 127)
        return np.sign(y) * np.expm1(np.abs(y) / 127 * np.log1p(mu)) / mu * 0.5, {}
    if name == "gain":
        g = rng.uniform(-14, 6)
        return x * 10 ** (g / 20), dict(gain_db=round(g, 1))
    if name != "clean":
        raise ValueError(f"unknown channel {name!r}; expected one of {CHANNELS}")
    return x, {}


def spec(set_name, index, domains=None):
    """(label, family) of sample `index` of a set, fixed by the index (every k-th is real)."""
    d = (domains or DOMAINS)[set_name]
    if index % d.every == 0:
        return "real", "bonafide"
    return "fake", d.families[(index - index // d.every - 1) % len(d.families)]


def synth_sample(seed, set_name, index, duration=(1.0, 2.0), domains=None):
    """One sample -> (float32 audio at SR, record: label, family, channel, tags, speaker, ...).
    `domains` is the table of SpeechSet the set belongs to (default: DOMAINS)."""
    domains = domains or DOMAINS
    if set_name not in domains:
        raise ValueError(f"unknown set {set_name!r}; expected one of {tuple(domains)}")
    label, family = spec(set_name, index, domains)
    rng = _rng(seed, set_name, index, 0)
    spk = int(rng.integers(N_SPEAKERS))
    v = speaker(seed, set_name, spk)
    fx = dict(NATURAL, **(FAMILIES[family][1] if label == "fake" else {}))
    x, breaths = _voice(rng, int(rng.uniform(*duration) * SR), v, fx)
    x *= 10 ** (rng.uniform(-28, -20) / 20) / np.sqrt(np.mean(x ** 2))  # same law for all
    ch = str(rng.choice(domains[set_name].channels))
    x, ch_params = channel(x, ch, rng)
    rec = dict(label=label, family=family, channel=ch, channel_params=ch_params, speaker=spk,
               female=v["female"], breaths=breaths,
               tags=list(FAMILIES[family][0]) if label == "fake" else [])
    return np.clip(x, -1, 1).astype(np.float32), rec


_LAYOUT = dict(
    asvspoof2019=("ASVspoof2019.LA.cm.{split}.txt", "flac", "LA_{L}_{n:07d}.flac",
                  "LA_{spk:04d} LA_{L}_{n:07d} - {att} {key}", None),
    asvspoof5=("ASVspoof5.{split}.tsv", "flac_{L}", "{L}_{n:010d}.flac",
               "{L}_{spk:04d} {L}_{n:010d} {g} - - - {tag5} {att5} {key} -", None),
    in_the_wild=("meta.csv", "", "{i}.wav", "{i}.wav,speaker_{spk},{itw}", "file,speaker,label"),
    fake_or_real=("", "testing/{label}", "file{i}.wav", None, None),
    add2023=("label.txt", "wav", "ADD2023_{L}_{n:05d}.wav", "ADD2023_{L}_{n:05d}.wav {add}", None),
    manifest=("manifest.csv", "audio", "{i:05d}.flac",
              "audio/{i:05d}.flac,{label},{att},test,{set},speaker_{spk},{channel}",
              "path,label,attack,split,source,speaker,channel"))

def _write_sample(job):
    """Synthesize sample i of a set and write its file -> (protocol line or None, record).
    One job per sample, so a pool of processes can share the work (make_speech_corpora)."""
    root, set_name, i, seed, duration, domains, annotate = job
    d = domains[set_name]
    _, folder, file, line, _ = _LAYOUT[d.kind]
    x, rec = synth_sample(seed, set_name, i, duration, domains)
    real = rec["label"] == "real"
    att = "-" if real else f"A{list(FAMILIES).index(rec['family']) + 1:02d}"
    fields = dict(rec, i=i, n=i + 1, L=d.ids[0], spk=rec["speaker"] + 1000,
                  g="F" if rec["female"] else "M",
                  key="bonafide" if real else "spoof", itw="bona-fide" if real else "spoof",
                  add="genuine" if real else "fake", att=att, att5="bonafide" if real else att,
                  tag5="bonafide" if real else "AC1", set=set_name)
    rel = os.path.join(set_name, folder.format(**fields), file.format(**fields))
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    sf.write(os.path.join(root, rel), x, SR, subtype="PCM_16")
    rec = dict(path=rel, set=set_name, split=d.split, **rec)
    if annotate:  # measured properties and a comment: what the reasoning route reads
        m = measure(x)
        rec.update(measured=m, comment=comment(rec, m, _rng(seed, set_name, i, 1)))
    return (line.format(**fields) if line else None), rec


def _build_set(root, set_name, n, seed, duration, domains, annotate, pool, bar):
    """Write one set's audio files and protocol -> (index entry, annotation records)."""
    d = domains[set_name]
    proto, folder, _, line, header = _LAYOUT[d.kind]
    shutil.rmtree(os.path.join(root, set_name), ignore_errors=True)  # no stale files of old builds
    jobs = [(root, set_name, i, seed, duration, domains, annotate) for i in range(n)]
    done = []
    for item in pool.imap(_write_sample, jobs, chunksize=16) if pool else map(_write_sample, jobs):
        done.append(item)
        bar.update()
    records = [rec for _, rec in done]
    proto = os.path.join(set_name, proto.format(split=d.ids[1]))
    if line:
        with open(os.path.join(root, proto), "w") as fh:
            fh.writelines(s + "\n" for s in ([header] if header else []) + [ln for ln, _ in done])
    labels = [r["label"] for r in records]
    audio_dir = os.path.join(set_name, folder.format(L=d.ids[0])) if d.kind in (
        "asvspoof2019", "asvspoof5", "add2023") else None
    return dict(kind=d.kind, path=proto.rstrip("/\\"), audio_dir=audio_dir, role=d.role,
                n_real=labels.count("real"), n_fake=labels.count("fake"),
                families=list(d.families), channels=list(d.channels)), records


def load_index(root):
    """root/index.json with `path` and `audio_dir` joined to root, ready for protocols.read_protocol."""
    with open(os.path.join(root, "index.json")) as f:
        index = json.load(f)
    for e in index.values():
        e["path"] = str(Path(root) / e["path"])
        e["audio_dir"] = str(Path(root) / e["audio_dir"]) if e["audio_dir"] else None
    return index


def make_speech_corpora(root, seed=0, size="default", scale=1.0, duration=None, domains=None,
                        annotate=True, workers=None):
    """Build (or reuse) the sets of `domains` (a table of SpeechSet; default DOMAINS, the
    classifier route's) under root -> load_index(root).

    size: "default" (each set's `size`, clips of 1-2 s), "quick" (each set's `quick` count,
    clips of QUICK_DURATION, for tests) or a dict {set: count} (only those sets); scale
    multiplies the counts. Writes the audio and protocols, root/annotations.jsonl (one record
    per sample, see load_annotations; `annotate=False` leaves out the measurements and
    comments, which only the reasoning route reads) and, last, root/index.json: {set: kind,
    path, audio_dir (relative to root), role, n_real, n_fake, families, channels, build}. A
    corpus whose every `build` (VERSION, seed, sizes, duration, annotate, the set's definition)
    matches is reused untouched. `workers` processes share the synthesis (default: one per
    CPU core, at most 4); the files are the same whatever their number."""
    domains = domains or DOMAINS
    sizes = ({k: d.size for k, d in domains.items()} if size == "default" else
             {k: d.quick for k, d in domains.items()} if size == "quick" else size)
    if not isinstance(sizes, dict) or set(sizes) - set(domains):
        raise ValueError(f"size must be 'default', 'quick' or a dict over {tuple(domains)}")
    sizes = {k: max(2, int(round(v * scale))) for k, v in sizes.items()}
    duration = list(duration or (QUICK_DURATION if size == "quick" else (1.0, 2.0)))
    if not 0.4 <= duration[0] <= duration[1]:
        raise ValueError(f"duration must be (lo, hi) seconds with 0.4 <= lo <= hi, got {duration}")
    build = dict(version=VERSION, seed=seed, sizes=sizes, duration=duration, annotate=annotate)
    # the JSON round trip makes tuples lists, as they come back from index.json
    builds = {k: json.loads(json.dumps(dict(build, set=asdict(domains[k])))) for k in sizes}
    try:
        index = load_index(root)
        if set(index) == set(sizes) and all(e["build"] == builds[k] for k, e in index.items()):
            return index
    except (OSError, ValueError, KeyError):
        pass  # no usable index: build from scratch
    os.makedirs(root, exist_ok=True)
    if os.path.exists(os.path.join(root, "index.json")):  # an interrupted rebuild is not reused
        os.remove(os.path.join(root, "index.json"))
    index, records = {}, []
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        with tqdm(total=sum(sizes.values()), desc=f"speech corpus {root}", leave=False) as bar:
            for set_name, n in sizes.items():
                entry, recs = _build_set(root, set_name, n, seed, duration, domains, annotate,
                                         pool, bar)
                index[set_name], records = dict(entry, build=builds[set_name]), records + recs
    finally:
        if pool:
            pool.close()
    with open(os.path.join(root, "annotations.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(root, "index.json"), "w") as f:  # written last: marks a finished build
        json.dump(index, f, indent=1)
    return load_index(root)


def load_annotations(root):
    """root/annotations.jsonl -> {path: record}. A record holds path, label, family ("bonafide"
    for real), channel (+ channel_params), tags, set, split (train/val/test for the reasoning
    route), speaker, breaths, measured (measure()) and comment. Paths are str(Path(root) / rel),
    the form protocols.read_protocol gives for the paths of load_index(root)."""
    out = {}
    with open(os.path.join(root, "annotations.jsonl")) as f:
        for lineno, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{root}/annotations.jsonl:{lineno}: {e}") from None
            rec["path"] = str(Path(root) / rec["path"])
            out[rec["path"]] = rec
    return out
