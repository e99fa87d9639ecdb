"""Speech and image data in memory: audio loading and resampling, crop / pad / chunk and
segments, image loading, a file check, batching. The readers of the protocol formats are in
protocols.py, RawBoost in rawboost.py.

Labels are "real" (bona fide) and "fake" (spoof); class indices fake = 0, real = 1, the order of
the AntiDeepfake detectors' logits [fake, real].
"""

import os
import warnings

import numpy as np
import soundfile as sf

from protocols import Sample


# ----------------------------------------------------------------------------- audio

def resample_fft(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling in the DFT domain (the method of scipy.signal.resample).

    With N input samples and M = round(N * sr_out / sr_in) output samples:
        y = irfft(Y, M) * M / N,   Y = rfft(x) truncated (down) or zero-padded (up) to M//2+1 bins.
    It is ideal brick-wall interpolation of the clip's periodic extension: exact for a
    band-limited periodic signal, anti-aliased by construction when downsampling (nothing above
    sr_out / 2 survives), with slight ringing near the clip ends when the ends do not meet.
    """
    N = len(x)
    M = max(1, round(N * sr_out / sr_in))
    X = np.fft.rfft(x.astype(np.float64))
    Y = np.zeros(M // 2 + 1, dtype=np.complex128)
    k = min(len(X), len(Y))
    Y[:k] = X[:k]
    # a Nyquist bin (even length) stands for one component, any other bin for a +/- pair:
    # the bin at min(N, M) / 2 changes role, so rescale it as scipy.signal.resample does
    if M < N and M % 2 == 0:
        Y[M // 2] *= 2.0        # becomes the output's Nyquist bin
    elif M > N and N % 2 == 0:
        Y[N // 2] *= 0.5        # was the input's Nyquist bin
    return (np.fft.irfft(Y, M) * (M / N)).astype(np.float32)


def load_audio(path, sample_rate: int = 16000, resample: bool = True) -> np.ndarray:
    """Read an audio file with soundfile -> float32 mono waveform at `sample_rate` Hz, shape (T,).

    Integer PCM is scaled to [-1, 1) by soundfile (int16: x / 32768). Several channels are mixed
    down by their mean, which keeps the range (channels in antiphase would cancel; such a file is
    broken anyway). Another rate is converted by `resample_fft`, or with resample=False rejected.
    Missing file -> FileNotFoundError; unreadable or zero-length file -> ValueError naming it.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)     # (T, C)
    except (sf.SoundFileError, RuntimeError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from e
    if x.shape[0] == 0:
        raise ValueError(f"audio file {path} has no samples")
    if not np.isfinite(x).all():  # float WAVs can hold them; a model fed one goes NaN
        raise ValueError(f"audio file {path} holds {int((~np.isfinite(x)).sum())} NaN or inf "
                         f"sample(s)")
    x = x.mean(axis=1)                                                # (T,)
    if sr != sample_rate:
        if not resample:
            raise ValueError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz")
        x = resample_fft(x, sr, sample_rate)
    return x


# ----------------------------------------------------------------------------- crop / pad / chunk

def random_crop_or_pad(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Fixed-length training clip of `length` samples.

    Longer: a window at a random offset U{0..T-length} (one rng draw). Exactly `length`: a copy
    (no draw). Shorter: x repeated end to end and cut, as the ASVspoof baselines do (AASIST,
    RawBoost's `pad`): zero-padding would leave a silent tail that reveals the true duration,
    a shortcut whenever durations differ between real and fake.
    """
    T = len(x)
    if T == 0:
        raise ValueError("cannot crop or pad an empty waveform")
    if T > length:
        start = int(rng.integers(0, T - length + 1))
        return x[start:start + length].copy()
    return np.tile(x, -(-length // T))[:length]     # ceil(length / T) copies, cut


def train_clip(x: np.ndarray, rng: np.random.Generator, min_len: int, max_len: int) -> np.ndarray:
    """The speech paper's training clips: 'clips over 13 s randomly cropped to 10-13 s'.

    If T > max_len: L ~ U{min_len..max_len}, then a window of L samples at a random offset
    (two rng draws). If T <= max_len (including exactly max_len): x itself (no copy, no
    draw, no padding); collate_audio pads the batch and returns the true lengths.
    At 16 kHz the paper's setting is min_len = 160000, max_len = 208000.
    """
    if not 0 < min_len <= max_len:
        raise ValueError(f"need 0 < min_len <= max_len, got {min_len}, {max_len}")
    if len(x) <= max_len:
        return x
    L = int(rng.integers(min_len, max_len + 1))
    return random_crop_or_pad(x, L, rng)


def chunk_audio(x: np.ndarray, chunk_len: int) -> list:
    """Evaluation chunks: consecutive non-overlapping windows of chunk_len samples; the last,
    shorter remainder is kept (never padded), so the chunks concatenate back to x."""
    if chunk_len <= 0:
        raise ValueError(f"chunk_len must be positive, got {chunk_len}")
    if len(x) == 0:
        raise ValueError("cannot chunk an empty waveform")
    return [x[i:i + chunk_len] for i in range(0, len(x), chunk_len)]


def audio_seconds(path) -> float:
    """A file's duration from its header (no decoding), seconds."""
    try:
        return float(sf.info(str(path)).duration)
    except (sf.SoundFileError, RuntimeError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from e


def segment_samples(samples: list, seconds: float, durations: list) -> list:
    """Cut every sample into consecutive `seconds`-long segments; the last one keeps its
    shorter length, as AntiDeepfake's Deepfake-Eval-2024 preparation does
    (protocols/DeepfakeEval2024_segment.py: ceil(T / L) segments, never padded).

    Returns new Samples; segment k of a sample keeps its path, label and attack, with
    meta["segment"] = [k, start_s, end_s] (what `AudioSet.audio` cuts out)."""
    if seconds <= 0:
        raise ValueError(f"segment length must be positive, got {seconds}")
    out = []
    for s, d in zip(samples, durations):
        n = max(1, int(np.ceil(round(d / seconds, 6))))  # round: 8.0000001 s is 2 x 4 s
        for k in range(n):
            seg = [k, k * seconds, min((k + 1) * seconds, d)]
            out.append(Sample(s.path, s.label, s.attack, s.split, s.source,
                              dict(s.meta, segment=seg)))
    return out


# ----------------------------------------------------------------------------- images

def load_image(path):
    """An image file -> an RGB PIL image, read in full now (a truncated or unreadable file is
    an error naming it, not a crash deep in the processor). 16-bit images (PIL modes I;16* and
    I) are scaled to 8 bits by x / 257 (65535 -> 255); converting them directly would clip every
    value above 255 to white."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16") or im.mode == "I":
                x = np.asarray(im, dtype=np.float64)
                if x.min() < 0 or x.max() > 65535:
                    raise ValueError(f"pixel values {x.min():g}..{x.max():g} are not 16-bit")
                return Image.fromarray(np.round(x / 257).astype(np.uint8), "L").convert("RGB")
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def check_files(paths, read, skip: bool = False, what: str = "file") -> list:
    """Read every file once before any training (`read(path)` raises ValueError naming a bad
    one) -> the paths that read. skip=True: bad files are dropped and counted in a warning."""
    from tqdm import tqdm
    kept, bad = [], []
    for p in tqdm(paths, desc=f"checking {len(paths)} {what}s", leave=False):
        try:
            read(p)
            kept.append(p)
        except (ValueError, FileNotFoundError) as e:
            if not skip:
                raise
            bad.append(str(e))
    if bad:
        warnings.warn(f"skipped {len(bad)} of {len(paths)} {what}s that cannot be read "
                      f"(first: {bad[0]})", stacklevel=2)
    return kept


# ----------------------------------------------------------------------------- batching

def collate_audio(waves: list) -> tuple:
    """Waveforms of different lengths -> (FloatTensor (B, T_max) zero-padded, LongTensor (B,)).

    The lengths let the model ignore the padding (masks from lengths, never from values).
    """
    import torch  # here, not at the top: readers and corpus generation need no torch

    if not waves:
        raise ValueError("collate_audio got an empty list")
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)    # (B,)
    batch = torch.zeros(len(waves), int(lengths.max()))                   # (B, T_max)
    for b, w in enumerate(waves):
        batch[b, :len(w)] = torch.as_tensor(np.asarray(w, dtype=np.float32))
    return batch, lengths


_LABEL_INDEX = {"fake": 0, "real": 1}


def label_to_index(label: str) -> int:
    """'fake' -> 0, 'real' -> 1 (logits are ordered [fake, real])."""
    if label not in _LABEL_INDEX:
        raise ValueError(f"label must be 'real' or 'fake', got {label!r}")
    return _LABEL_INDEX[label]
