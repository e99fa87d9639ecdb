"""RawBoost data augmentation (Tak, Kamble, Patino, Todisco, Evans, ICASSP 2022), numpy only.

Three noise types, applied to the raw waveform x[n]:

  1. linear and non-linear convolutive noise (LnL):
         y[n] = sum_{j=1..N_f} (h_j * x^j)[n],   h_j = a cascade of nBands random notch FIRs
     the j = 1 term is the linear channel; j > 1 are higher-order (non-linear) terms whose gain
     range is lowered by a random bias of 5-20 dB;
  2. impulsive signal-dependent additive noise (ISD): on a random P_beta % of samples
         y[n] = x[n] + g_sd * x[n] * f_r[n],   f_r = product of two U(-1, 1) draws;
  3. stationary signal-independent additive noise (SSI): white noise coloured by random
     notch FIRs, added at an SNR drawn from U(SNRmin, SNRmax) dB.

Algorithms 4-8 combine them as in the authors' code (github.com/TakHemlata/RawBoost-antispoofing):
4 = 1->2->3 in series, 5 = 1->2, 6 = 1->3, 7 = 2->3, 8 = 1 and 2 in parallel (outputs summed,
then peak-normalised); 0 = no augmentation. The speech paper (Wang et al. 2026) uses algorithm 5.

Departures from the reference code, and why:
  1. All randomness comes from an explicit `np.random.Generator` (the reference uses numpy's
     global RNG), so a (seed, sample) pair always gives the same augmentation.
  2. FIR design is a hand-written windowed-sinc band-stop (Hamming window) instead of
     `scipy.signal.firwin` (no scipy here); it is the same textbook design. The per-band DC
     scaling of firwin is skipped: the cascade is rescaled to peak gain 10^(G/20) anyway.
  3. Filtering is centred ("same"-length, delay (K-1)/2 removed exactly for the odd-length
     linear-phase cascade) through an FFT convolution; the reference pads and slices by N/2,
     which is one sample off, and uses direct `lfilter` (slow for long clips).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawBoostConfig:
    """RawBoost parameters; the defaults are the paper's (and its code's) defaults."""

    N_f: int = 5                 # order of the (non-)linearity; 1 = linear only
    nBands: int = 5              # notch filters per cascade
    minF: float = 20.0           # centre frequency range of each notch [Hz]
    maxF: float = 8000.0
    minBW: float = 100.0         # notch bandwidth range [Hz]
    maxBW: float = 1000.0
    minCoeff: int = 10           # FIR length range (made odd)
    maxCoeff: int = 100
    minG: float = 0.0            # peak gain range of the linear cascade [dB]
    maxG: float = 0.0
    minBiasLinNonLin: float = 5.0    # extra attenuation of non-linear terms [dB]
    maxBiasLinNonLin: float = 20.0
    P: float = 10.0              # at most P % of samples get impulsive noise
    g_sd: float = 2.0            # impulsive noise gain
    SNRmin: float = 10.0         # SNR range of the coloured additive noise [dB]
    SNRmax: float = 40.0


def bandstop_fir(num_taps: int, f1: float, f2: float, sr: int) -> np.ndarray:
    """Windowed-sinc band-stop FIR rejecting [f1, f2] Hz (num_taps odd, linear phase).

    Ideal low-pass with cutoff f: h_f[n] = (2 f / sr) * sinc(2 f / sr * (n - M)), M = (K-1)/2.
    Band-stop = all-pass - band-pass = delta[n - M] - h_f2[n] + h_f1[n], times a Hamming window
    to trade the ideal response's slow decay (Gibbs ripple) for a wider transition band.
    """
    if num_taps % 2 == 0:
        raise ValueError(f"num_taps must be odd for a band-stop FIR, got {num_taps}")
    n = np.arange(num_taps) - (num_taps - 1) / 2

    def lowpass(f: float) -> np.ndarray:
        return 2 * f / sr * np.sinc(2 * f / sr * n)

    delta = (n == 0).astype(np.float64)
    return (delta - lowpass(f2) + lowpass(f1)) * np.hamming(num_taps)


def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    # the reference draws U(minG - 5, maxG - 20) = U(-5, -20); sort so the range is well defined
    return float(rng.uniform(min(a, b), max(a, b)))


def notch_cascade(rng: np.random.Generator, cfg: RawBoostConfig, sr: int,
                  gain_db: tuple) -> np.ndarray:
    """nBands random band-stop FIRs convolved into one filter, rescaled to max|H| = 10^(G/20).

    Per band: f_c ~ U(minF, min(maxF, sr/2)), bw ~ U(minBW, maxBW), K ~ U(minCoeff, maxCoeff) rounded
    down and made odd; the edges f_c -/+ bw/2 are clipped into (0, sr/2). G ~ U(gain_db).
    """
    b = np.ones(1)
    for _ in range(cfg.nBands):
        fc = _uniform(rng, cfg.minF, min(cfg.maxF, sr / 2))  # maxF 8 kHz > Nyquist if sr < 16k
        bw = _uniform(rng, cfg.minBW, cfg.maxBW)
        K = int(_uniform(rng, cfg.minCoeff, cfg.maxCoeff))
        K += 1 - K % 2                                      # odd length: integer group delay
        f1 = max(fc - bw / 2, 1e-3)
        f2 = min(fc + bw / 2, sr / 2 - 1e-3)
        b = np.convolve(b, bandstop_fir(K, f1, f2, sr))
    G = _uniform(rng, *gain_db)
    # peak of |H| on a fine grid (the reference uses freqz's 512 points)
    n_fft = max(4096, 1 << int(np.ceil(np.log2(8 * len(b)))))
    peak = np.abs(np.fft.rfft(b, n_fft)).max()
    return 10 ** (G / 20) * b / peak


def fir_filter(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-delay filtering by an odd-length linear-phase FIR: (b * x)[n + (K-1)/2], len(x) kept.

    FFT convolution: O(T log T) instead of O(T K); a 13 s clip times a ~500-tap cascade
    would otherwise cost ~10^8 multiply-adds per filter.
    """
    n = len(x) + len(b) - 1
    n_fft = 1 << int(np.ceil(np.log2(n)))
    y = np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(b, n_fft), n_fft)[:n]
    delay = (len(b) - 1) // 2
    return y[delay:delay + len(x)]


def _peak_normalise(y: np.ndarray) -> np.ndarray:
    # the reference's normWav(y, always=0): only rescale when the signal would clip
    peak = np.abs(y).max() if len(y) else 0.0
    return y / peak if peak > 1 else y


def lnl_convolutive_noise(x: np.ndarray, rng: np.random.Generator, cfg: RawBoostConfig,
                          sr: int) -> np.ndarray:
    """Noise type 1: y = sum_{j=1..N_f} h_j * x^j, mean removed, peak-normalised if > 1."""
    y = np.zeros_like(x)
    for j in range(1, cfg.N_f + 1):
        if j == 1:
            gain = (cfg.minG, cfg.maxG)
        else:                       # non-linear terms sit 5-20 dB below the linear one
            gain = (cfg.minG - cfg.minBiasLinNonLin, cfg.maxG - cfg.maxBiasLinNonLin)
        y = y + fir_filter(x ** j, notch_cascade(rng, cfg, sr, gain))
    return _peak_normalise(y - y.mean())


def isd_additive_noise(x: np.ndarray, rng: np.random.Generator,
                       cfg: RawBoostConfig) -> np.ndarray:
    """Noise type 2: y[p] = x[p] + g_sd * x[p] * f_r[p] on a random P_beta % of samples p.

    P_beta ~ U(0, P); f_r = (2 u1 - 1)(2 u2 - 1), u ~ U(0, 1): impulses proportional to the
    signal itself (clipping-like, signal dependent), none in silence.
    """
    T = len(x)
    beta = _uniform(rng, 0.0, cfg.P)
    p = rng.choice(T, size=int(T * beta / 100), replace=False)
    f_r = (2 * rng.random(len(p)) - 1) * (2 * rng.random(len(p)) - 1)
    y = x.copy()
    y[p] = x[p] + cfg.g_sd * x[p] * f_r
    return _peak_normalise(y)


def ssi_additive_noise(x: np.ndarray, rng: np.random.Generator, cfg: RawBoostConfig,
                       sr: int) -> np.ndarray:
    """Noise type 3: y = x + w, w = coloured white noise with 20 log10(||x|| / ||w||) = SNR.

    SNR ~ U(SNRmin, SNRmax) dB; the colouring cascade uses the linear gain range (minG, maxG).
    Unlike types 1 and 2 the result is not peak-normalised (as in the reference).
    """
    w = fir_filter(rng.standard_normal(len(x)), notch_cascade(rng, cfg, sr, (cfg.minG, cfg.maxG)))
    SNR = _uniform(rng, cfg.SNRmin, cfg.SNRmax)
    w_norm = np.linalg.norm(w)
    if w_norm == 0:                 # degenerate (e.g. a one-sample clip): nothing to add
        return x.copy()
    return x + w / w_norm * np.linalg.norm(x) / 10 ** (SNR / 20)


def rawboost(x: np.ndarray, algo: int, rng: np.random.Generator, sr: int = 16000,
             cfg: RawBoostConfig = RawBoostConfig()) -> np.ndarray:
    """Apply RawBoost algorithm `algo` (0-8, see module docstring) -> float32, same length."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"rawboost expects a non-empty 1-D waveform, got shape {x.shape}")
    if algo == 0:
        y = x
    elif algo == 1:
        y = lnl_convolutive_noise(x, rng, cfg, sr)
    elif algo == 2:
        y = isd_additive_noise(x, rng, cfg)
    elif algo == 3:
        y = ssi_additive_noise(x, rng, cfg, sr)
    elif algo == 4:
        y = ssi_additive_noise(isd_additive_noise(lnl_convolutive_noise(x, rng, cfg, sr),
                                                  rng, cfg), rng, cfg, sr)
    elif algo == 5:
        y = isd_additive_noise(lnl_convolutive_noise(x, rng, cfg, sr), rng, cfg)
    elif algo == 6:
        y = ssi_additive_noise(lnl_convolutive_noise(x, rng, cfg, sr), rng, cfg, sr)
    elif algo == 7:
        y = ssi_additive_noise(isd_additive_noise(x, rng, cfg), rng, cfg, sr)
    elif algo == 8:
        y = _peak_normalise(lnl_convolutive_noise(x, rng, cfg, sr) + isd_additive_noise(x, rng, cfg))
    else:
        raise ValueError(f"RawBoost algo must be in 0..8, got {algo}")
    return y.astype(np.float32)
