"""What a listener would say about a synthetic speech clip: measurements taken on the audio
(pauses, pitch range, bandwidth, ...) and the human-like comments templated from them and from
the clip's spoof family (the stand-in for HIR-SDD's annotations; see synth_speech.py).
"""
import numpy as np

SR = 16000  # the sample rate of the whole synthetic speech corpus


def measure(x, sr=SR, min_pause=0.15):
    """What a listener would notice, measured on the audio (20 ms frames, hop 10 ms).

    Pauses: runs >= min_pause of frames below lo + (hi - lo) / 2 dB between the first and last
    speech frame (hi, lo: 95th and 5th energy percentiles, lo >= hi - 60). Pitch: per speech
    frame, the shortest lag (60-400 Hz) whose normalised autocorrelation is within 10 % of the
    best (avoids octave errors), voiced when > 0.5; range = 12 log2(p90 / p10) semitones.
    bandwidth_hz: below it lies 99 % of the energy; hf_db: energy above 4 kHz over the total."""
    x, hop, w = np.asarray(x, float), sr // 100, sr // 50
    win = np.lib.stride_tricks.sliding_window_view
    fr = win(np.pad(x, (0, w)), w)[::hop]  # (T, w)
    e = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-12)
    hi = np.percentile(e, 95)
    lo = max(np.percentile(e, 5), hi - 60)
    speech = e > (lo + hi) / 2
    gaps = np.diff(np.flatnonzero(speech)) - 1  # silent frames between speech frames
    runs = gaps[gaps * hop >= min_pause * sr] * hop / sr
    pf = win(np.pad(x, (0, 2 * w)), 2 * w)[::hop][speech]  # (voiced candidates, 2w)
    pf = pf - pf.mean(axis=1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(pf, 4 * w, axis=1)) ** 2, axis=1)[:, :2 * w]
    ac = ac / (ac[:, :1] + 1e-12) / (1 - np.arange(2 * w) / (2 * w))  # unbiased, normalised
    lags = np.arange(sr // 400, sr // 60 + 1)
    a = ac[:, lags]  # (frames, lags)
    best = lags[np.argmax(a >= 0.9 * a.max(axis=1, keepdims=True), axis=1)]
    f0 = sr / best[a[np.arange(len(a)), best - lags[0]] > 0.5]
    p10, p90 = np.percentile(f0, [10, 90]) if len(f0) >= 3 else (1.0, 1.0)
    psd = (np.abs(np.fft.rfft(fr * np.hanning(w), axis=1)) ** 2).sum(0)
    f = np.fft.rfftfreq(w, 1 / sr)
    db = lambda r: round(float(10 * np.log10(r + 1e-12)), 1)  # noqa: E731
    return dict(duration=round(len(x) / sr, 3), n_pauses=len(runs),
                longest_pause=round(float(max(runs, default=0.0)), 3),
                pitch_range_st=round(float(12 * np.log2(p90 / p10)), 2),
                f0_median=round(float(np.median(f0)), 1) if len(f0) else 0.0,
                voiced_share=round(len(f0) / max(len(pf), 1), 3),
                bandwidth_hz=float(f[np.searchsorted(np.cumsum(psd) / psd.sum(), 0.99)]),
                hf_db=db(psd[f > 4000].sum() / psd.sum()), noise_db=round(float(lo - hi), 1),
                level_dbfs=db(np.mean(x ** 2)))


# ----------------------------------------------------------------------------- comments
_OPEN = dict(real=("I believe the audio is genuine.", "This sounds like a real person.",
                   "Natural human speech, in my opinion.", "I think this recording is authentic."),
             fake=("I think this is synthesized speech.", "The audio seems artificial.",
                   "Most likely a deepfake.", "This sounds generated to me."))
# What a listener says about each family; every phrasing names the family's cue.
_CUES = dict(
    flat_prosody=("the voice is monotone, the pitch moves over only {pitch_range_st:.1f} semitones",
                  "a flat, monotonous melody with no rise or fall at the phrase ends"),
    metronome=("the rhythm is mechanical, every syllable equally long, like a metronome",
               "syllables and pauses come at suspiciously regular intervals"),
    vocoder_buzz=("the voice has a buzzy, metallic quality, like a vocoder",
                  "there is a robotic buzz on the vowels"),
    band_limited=("the sound is muffled, almost nothing above {bandwidth_khz:.1f} kHz",
                  "a dull, band-limited voice without crisp consonants"),
    oversmoothed=("the voice sounds smeared and overly smooth, as if under water",
                  "a blurry, smoothed-out timbre where the sounds melt together"),
    no_pause=("the speaker talks for {duration:.1f} s without a single pause",
              "it goes on too long without a pause or a breath"),
    odd_stress=("the word stress is wrong, the emphasis falls on the ends of words",
                "an odd stress pattern, the pitch drops where words should be stressed"),
    accent=("the vowels sound foreign, a strange accent that does not fit the voice",
            "unusual pronunciation of the vowels, like an odd accent"),
    no_breath=("the pauses are dead silent, with no breath or room noise at all",
               "between the phrases there is digital silence and no breathing"))
_REAL = dict(
    pauses=("natural pauses, the longest about {longest_pause:.1f} s",
            "the speaker pauses where one would expect ({n_pauses} pause(s))"),
    one_phrase=("a short phrase spoken naturally in one go", "one natural phrase, nothing rushed"),
    breath=("audible breaths in the pauses", "I can hear the speaker breathe"),
    intonation=("varied intonation, the pitch moves over about {pitch_range_st:.0f} semitones",
                "a lively melody with natural rises and falls"),
    voice=("a non-robotic voice with slight natural roughness",
           "clear pronunciation and an individual timbre", "the pace speeds up and slows down"))
_CHANNEL = dict(
    noise=("Background noise is audible, about {noise:.0f} dB below the speech.",
           "There is some hiss in the background."),
    reverb=("It sounds like a room with some echo.", "The recording is reverberant."),
    telephone=("It sounds like a phone line, nothing above about {bandwidth_khz:.1f} kHz.",
               "Narrow-band, telephone-like sound quality."))
# Annotators often grant a fake its qualities before naming the cue.
_CONCEDE = ("", "", "the pronunciation is clear, but ", "at first it sounds fine, but ")


def comment(rec, m, rng):
    """Free-text comment from a sample's record (label, family, channel, breaths) and its
    measured properties m (measure()), wording drawn by rng."""
    fields = dict(m, bandwidth_khz=m["bandwidth_hz"] / 1000, noise=-m["noise_db"])
    pick = lambda options: str(rng.choice(options)).format(**fields)  # noqa: E731
    if rec["label"] == "real":
        parts = [pick(_REAL["pauses"] if m["n_pauses"] else _REAL["one_phrase"])]
        parts += [pick(_REAL["breath"])] if rec["breaths"] else []
        parts += [pick(_REAL[k]) for k in ("intonation", "voice") if rng.random() < 0.7]
    else:
        parts = [pick(_CONCEDE) + pick(_CUES[rec["family"]])]
    body = ", ".join(parts)
    text = f"{pick(_OPEN[rec['label']])} {body[0].upper()}{body[1:]}."
    if rec["channel"] in _CHANNEL:
        text += " " + pick(_CHANNEL[rec["channel"]])
    elif not -34 < m["level_dbfs"] < -18:
        text += " The recording is rather " + ("quiet." if m["level_dbfs"] <= -34 else "loud.")
    return text


# ----------------------------------------------------------------------------- corpus on disk
# kind -> (protocol file, audio folder, audio file, protocol line or None, header) in a set's
# folder; fields: i, n = i + 1, L = split letter, spk, g, key/itw/add (label words), att, att5.
