"""Speech data: one Sample type, readers for the real protocol formats, audio loading,
crop / pad / chunk, RawBoost (in rawboost.py, re-exported here), batching.

Labels are "real" (bona fide) and "fake" (spoof); class indices fake = 0, real = 1, the order of
the AntiDeepfake detectors' logits [fake, real]. Every reader returns list[Sample] and fails
loudly: missing protocol -> FileNotFoundError; no entries -> ValueError; malformed line or
unknown label -> ValueError "<file>:<line>: ..."; audio named by the protocol but absent ->
FileNotFoundError naming it and its line, or with missing="skip" a counted skip (one warning).
`split=None` keeps what the format says (see each reader), a string overrides it; `source`
defaults to the corpus name (override it when a format carries another corpus, e.g. a
synthetic domain written as an ASVspoof 2019 protocol).
"""

import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from rawboost import RawBoostConfig, rawboost  # noqa: F401  (re-exported: data.rawboost)


@dataclass(frozen=True)
class Sample:
    path: str       # audio file
    label: str      # "real" | "fake"
    attack: str     # attack / system id of a spoof; "-" for bona fide or when the corpus has none
    split: str      # as the corpus names it (train / dev / eval / testing / ...); "-" if unknown
    source: str     # corpus (or synthetic domain) name
    meta: dict = field(default_factory=dict, hash=False)  # speaker, codec, tags, comment, ...


_ASV_LABELS = {"bonafide": "real", "spoof": "fake"}
_SPLIT_LETTER = {"T": "train", "D": "dev", "E": "eval"}
# what soundfile opens (libsndfile: WAV, FLAC, OGG Vorbis/Opus, AIFF, AU, CAF, W64, RF64; MP3
# from libsndfile 1.1); used to list folders and find files
_AUDIO_EXTS = (".wav", ".flac", ".ogg", ".opus", ".aif", ".aiff", ".au", ".caf", ".w64",
               ".rf64") + ((".mp3",) if "MP3" in sf.available_formats() else ())


# ----------------------------------------------------------------------------- reader plumbing

def _existing(path) -> Path:
    if not Path(path).is_file():
        raise FileNotFoundError(f"protocol file not found: {path}")
    return Path(path)


def read_text_lines(path) -> list:
    """A text file's lines, decoded as UTF-8 (a leading BOM dropped, as Excel writes one);
    bytes that are not UTF-8 are an error naming the file and the line."""
    path = Path(path)
    lines = path.read_bytes().splitlines(keepends=True)
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{i}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                             f"{e.start + 1}); save the file as UTF-8") from None
    return out


def _protocol_rows(path) -> tuple:
    """Whitespace-separated protocol -> (path, [(line number, tokens)]), blank lines skipped."""
    path = _existing(path)
    rows = [(i, line.split()) for i, line in enumerate(read_text_lines(path), 1) if line.strip()]
    if not rows:
        raise ValueError(f"{path}: protocol is empty")
    return path, rows


def _csv_rows(path, required: tuple) -> tuple:
    """CSV with a header -> (path, [(line number, row dict)]); header names stripped."""
    path = _existing(path)
    with io.StringIO("".join(read_text_lines(path)), newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: protocol is empty")
        reader.fieldnames = [name.strip() for name in reader.fieldnames]
        lacking = [c for c in required if c not in reader.fieldnames]
        if lacking:
            raise ValueError(f"{path}:1: header {reader.fieldnames} lacks column(s) {lacking}")
        rows = []
        for row in reader:
            # DictReader files surplus fields under None and fills short rows with None
            if None in row or None in row.values():
                raise ValueError(f"{path}:{reader.line_num}: expected "
                                 f"{len(reader.fieldnames)} comma-separated fields")
            rows.append((reader.line_num, {k: v.strip() for k, v in row.items()}))
    if not rows:
        raise ValueError(f"{path}: protocol has a header but no entries")
    return path, rows


def _label(token: str, mapping: dict, path, lineno: int) -> str:
    if token not in mapping:
        raise ValueError(f"{path}:{lineno}: unknown label {token!r} "
                         f"(expected one of {sorted(mapping)})")
    return mapping[token]


def _columns(path, lineno: int, tokens: list, n: int, layout: str) -> None:
    if len(tokens) != n:
        raise ValueError(f"{path}:{lineno}: expected {n} columns '{layout}', got {len(tokens)}")


def _split_from_id(utt: str) -> str:
    """ASVspoof / ADD ids carry the split as a T/D/E token: LA_T_1138215, T_0000000000,
    DF_E_2000013, ADD2023_T1.2R1_E_00000001.wav."""
    for token in utt.split("_"):
        if token in _SPLIT_LETTER:
            return _SPLIT_LETTER[token]
    return "-"


def _check_audio(entries: list, protocol: Path, missing: str) -> list:
    """entries: [(line number, Sample)] -> the Samples whose audio file exists."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    kept, skipped, first_line = [], [], {}
    for lineno, s in entries:
        if s.path in first_line:  # two lines for one file: one trial counted twice, or two labels
            raise ValueError(f"{protocol}: lines {first_line[s.path]} and {lineno} both name "
                             f"{s.path}")
        first_line[s.path] = lineno
        if os.path.isfile(s.path):
            kept.append(s)
        elif missing == "error":
            raise FileNotFoundError(f"{protocol}:{lineno}: audio file not found: {s.path}")
        else:
            skipped.append(s.path)
    if skipped:
        warnings.warn(f"{protocol}: skipped {len(skipped)} of {len(entries)} entries whose "
                      f"audio is missing (first: {skipped[0]})", stacklevel=3)
    if not kept:
        raise ValueError(f"{protocol}: no entry has its audio file (first missing: {skipped[0]})")
    return kept


# ----------------------------------------------------------------------------- readers

def read_asvspoof2019(protocol, audio_dir, split=None, source="asvspoof2019",
                      missing="error") -> list:
    """ASVspoof 2019 LA CM protocol, lines `SPK UTT - SYS KEY`, e.g. `LA_0079 LA_T_1138215 - -
    bonafide`, `LA_0079 LA_T_1271820 - A01 spoof`; audio at audio_dir/UTT.flac; attack = SYS;
    split from the id's T/D/E token."""
    path, rows = _protocol_rows(protocol)
    entries = []
    for i, tok in rows:
        _columns(path, i, tok, 5, "SPK UTT - SYS KEY")
        spk, utt, _, sys_id, key = tok
        label = _label(key, _ASV_LABELS, path, i)
        entries.append((i, Sample(str(Path(audio_dir) / f"{utt}.flac"), label,
                                  sys_id if label == "fake" else "-",
                                  split or _split_from_id(utt), source, {"speaker": spk})))
    return _check_audio(entries, path, missing)


def read_asvspoof2021(key, audio_dir, split=None, source="asvspoof2021",
                      missing="error") -> list:
    """ASVspoof 2021 LA or DF key (trial metadata); audio at audio_dir/UTT.flac.

    LA, 8 columns:  `SPK UTT CODEC TRANSMISSION ATTACK KEY TRIM PHASE`
                    e.g. `LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval`
    DF, 13 columns: `SPK UTT CODEC CORPUS ATTACK KEY TRIM PHASE VOCODER - - - -`
    split from the id (E -> eval); the phase (progress / eval / hidden_track) goes to meta.
    """
    path, rows = _protocol_rows(key)
    entries = []
    for i, tok in rows:
        if len(tok) not in (8, 13):
            raise ValueError(f"{path}:{i}: expected 8 (LA) or 13 (DF) columns, got {len(tok)}")
        spk, utt, codec, channel, attack, key_, trim, phase = tok[:8]
        label = _label(key_, _ASV_LABELS, path, i)
        meta = {"speaker": spk, "codec": codec, "trim": trim, "phase": phase}
        if len(tok) == 13:
            meta.update(track="DF", corpus=channel, vocoder=tok[8])
        else:
            meta.update(track="LA", transmission=channel)
        entries.append((i, Sample(str(Path(audio_dir) / f"{utt}.flac"), label,
                                  attack if label == "fake" else "-",
                                  split or _split_from_id(utt), source, meta)))
    return _check_audio(entries, path, missing)


def read_asvspoof5(tsv, audio_dir, split=None, source="asvspoof5", missing="error") -> list:
    """ASVspoof 5 protocol, 10 columns `SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q
    CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP`, e.g. `T_4850 T_0000000000 F - - - AC3 A05 spoof
    -`; audio at audio_dir/FLAC_FILE_NAME.flac; attack = ATTACK_LABEL; split from the id."""
    path, rows = _protocol_rows(tsv)
    entries = []
    for i, tok in rows:
        _columns(path, i, tok, 10, "SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q "
                                   "CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP")
        spk, utt, gender, codec, codec_q, codec_seed, tag, attack, key, _ = tok
        label = _label(key, _ASV_LABELS, path, i)
        meta = {"speaker": spk, "gender": gender, "codec": codec, "codec_q": codec_q,
                "codec_seed": codec_seed, "attack_tag": tag}
        entries.append((i, Sample(str(Path(audio_dir) / f"{utt}.flac"), label,
                                  attack if label == "fake" else "-",
                                  split or _split_from_id(utt), source, meta)))
    return _check_audio(entries, path, missing)


def read_in_the_wild(meta_csv, audio_dir=None, split=None, source="in_the_wild",
                     missing="error") -> list:
    """In-the-Wild (Mueller et al. 2022) `meta.csv`: header `file,speaker,label`, label
    `bona-fide` / `spoof`; audio next to meta.csv unless audio_dir is given.
    An evaluation-only corpus: split defaults to "eval"."""
    path, rows = _csv_rows(meta_csv, ("file", "speaker", "label"))
    root = Path(audio_dir) if audio_dir is not None else path.parent
    labels = {"bona-fide": "real", "spoof": "fake"}
    entries = [(i, Sample(str(root / r["file"]), _label(r["label"], labels, path, i), "-",
                          split or "eval", source, {"speaker": r["speaker"]}))
               for i, r in rows]
    return _check_audio(entries, path, missing)


def read_fake_or_real(root, split="testing", source="fake_or_real") -> list:
    """Fake-or-Real folders root/{training,validation,testing}/{real,fake}/<file>: the files
    soundfile reads (_AUDIO_EXTS) sorted by name, real first (deterministic); others ignored."""
    base = Path(root) / split
    samples = []
    for cls in ("real", "fake"):
        folder = base / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"Fake-or-Real folder not found: {folder}")
        entries = sorted(p for p in folder.iterdir() if p.is_file())
        files = [p for p in entries if p.suffix.lower() in _AUDIO_EXTS]
        if len(files) < len(entries):  # said, never silently dropped
            others = sorted({p.suffix or p.name for p in entries if p not in files})
            warnings.warn(f"{folder}: skipped {len(entries) - len(files)} file(s) that are not "
                          f"audio soundfile reads ({', '.join(others)})", stacklevel=2)
        samples += [Sample(str(p), cls, "-", split, source) for p in files]
    if not samples:
        raise ValueError(f"{base}: no audio files {_AUDIO_EXTS} under real/ or fake/")
    return samples


def read_add2023(label_txt, audio_dir, split=None, source="add2023", missing="error") -> list:
    """ADD 2023 `label.txt`, lines `FILENAME LABEL` with LABEL `genuine` / `fake`; FILENAME
    carries its extension (`ADD2023_T1.2R1_E_00000001.wav`); split from its T/D/E token."""
    path, rows = _protocol_rows(label_txt)
    labels = {"genuine": "real", "fake": "fake"}
    entries = []
    for i, tok in rows:
        _columns(path, i, tok, 2, "FILENAME LABEL")
        name, key = tok
        entries.append((i, Sample(str(Path(audio_dir) / name), _label(key, labels, path, i),
                                  "-", split or _split_from_id(name), source)))
    return _check_audio(entries, path, missing)


def read_dfe2024(csv_path, audio_dir, split=None, source="dfe2024", missing="error") -> list:
    """Deepfake-Eval-2024 (Chandra et al. 2025) audio metadata (`audio-metadata-publish.csv`).

    Columns, matched case-insensitively: `Filename` (in audio_dir, i.e. `audio-data/`; when it
    has no extension, .wav/.flac/.mp3 are tried), `Ground Truth` (`Real` / `Fake`), and
    optionally `Finetuning Set` (`train` / `test`, the official 60/40 split) -> split; all other
    columns go to meta. Assumption: these names come from public loaders of the gated dataset
    card (nuriachandra/Deepfake-Eval-2024), which could not be read here. Rows labelled
    `unknown` cannot be scored: they are dropped and counted in a warning.
    """
    path, rows = _csv_rows(csv_path, ())
    names = {k.lower(): k for k in rows[0][1]}   # lower-case name -> header as written
    for need in ("filename", "ground truth"):
        if need not in names:
            raise ValueError(f"{path}:1: header {list(names.values())} lacks a {need!r} column")
    file_col, label_col = names["filename"], names["ground truth"]
    split_col = names.get("finetuning set")
    labels = {"real": "real", "fake": "fake"}
    entries, unknown = [], 0
    for i, r in rows:
        if r[label_col].lower() == "unknown":
            unknown += 1
            continue
        file = Path(audio_dir) / r[file_col]
        if not file.suffix:
            file = next((file.with_suffix(e) for e in _AUDIO_EXTS
                         if file.with_suffix(e).is_file()), file)
        meta = {k: v for k, v in r.items() if k not in (file_col, label_col, split_col)}
        entries.append((i, Sample(str(file), _label(r[label_col].lower(), labels, path, i), "-",
                                  split or (r[split_col] if split_col else "-"), source, meta)))
    if unknown:
        warnings.warn(f"{path}: skipped {unknown} rows whose ground truth is 'unknown'",
                      stacklevel=2)
    if not entries:
        raise ValueError(f"{path}: no labelled rows")
    return _check_audio(entries, path, missing)


def read_manifest(csv_path, split=None, source=None, missing="error") -> list:
    """Generic CSV manifest: header with at least `path,label`; optional `attack`, `split`,
    `source`; any other column goes to meta (as strings). label is one of real / bonafide /
    bona-fide (-> "real") or fake / spoof (-> "fake"), case-insensitive. Relative paths are
    resolved against the csv's folder. source defaults to the column, else the csv's stem."""
    path, rows = _csv_rows(csv_path, ("path", "label"))
    labels = {"real": "real", "bonafide": "real", "bona-fide": "real",
              "fake": "fake", "spoof": "fake"}
    own = ("path", "label", "attack", "split", "source")
    entries = []
    for i, r in rows:
        meta = {k: v for k, v in r.items() if k not in own}
        entries.append((i, Sample(str(path.parent / r["path"]),   # absolute paths stay as they are
                                  _label(r["label"].lower(), labels, path, i),
                                  r.get("attack") or "-", split or r.get("split") or "-",
                                  source or r.get("source") or path.stem, meta)))
    return _check_audio(entries, path, missing)


_READERS = {"asvspoof2019": read_asvspoof2019, "asvspoof2021": read_asvspoof2021,
            "asvspoof5": read_asvspoof5, "in_the_wild": read_in_the_wild,
            "fake_or_real": read_fake_or_real, "add2023": read_add2023,
            "dfe2024": read_dfe2024, "manifest": read_manifest}
_NEEDS_AUDIO_DIR = {"asvspoof2019", "asvspoof2021", "asvspoof5", "add2023", "dfe2024"}


def read_protocol(kind: str, path, audio_dir=None, **kw) -> list:
    """Dispatch to read_<kind>; kw (split, source, missing, ...) pass through."""
    if kind not in _READERS:
        raise ValueError(f"unknown protocol kind {kind!r}; expected one of {sorted(_READERS)}")
    if audio_dir is not None:
        if kind in ("fake_or_real", "manifest"):
            raise ValueError(f"{kind} takes no audio_dir (paths come from {path})")
        kw["audio_dir"] = audio_dir
    elif kind in _NEEDS_AUDIO_DIR:
        raise ValueError(f"{kind} needs audio_dir")
    return _READERS[kind](path, **kw)


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
