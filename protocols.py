"""Speech data sets on disk: one Sample type and readers for the real protocol formats
(ASVspoof 2019 / 2021 / 5, In-the-Wild, Fake-or-Real, ADD 2023, Deepfake-Eval-2024, CSV
manifests), all behind `read_protocol(kind, path, audio_dir)`.

Labels are "real" (bona fide) and "fake" (spoof). Every reader returns list[Sample] and fails
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

import soundfile as sf


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
