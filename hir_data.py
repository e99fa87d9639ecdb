"""HIR-SDD data (Dvirniak et al. 2026): annotations -> prompts and targets, and grounding.

    record (read_hir_manifest)  -> dataset "hl" (Train-1-HL / Val-1-HL / Test-1-HL), "r" (the
                                   reasoning set: Train-2-* / Test-2-R) or "hard" (extra test
                                   clips for the hard / out-of-distribution table), and a split
                                -> hard-label target  "Final Answer: Real|Fake"
                                -> reasoning target   <think>comment</think>
                                                      <reasons>[TAG, ...]</reasons>
                                                      <answer>Real|Fake</answer>
    grounding (perturb_span)    -> a 0.2-1.2 s span gets a gain change, Gaussian noise or a time
                                   mask, and a sentence naming it opens <think> (Sec. 4.2)

The formats, the 30 s cut and the grounding recipe follow the paper's public code. Where this
departs from it (the paper leaves these open): a share `p` of the training clips is perturbed,
fixed per clip; a gain change is 2-8 dB up or down (so it is audible); the noise SNR is relative
to the whole clip; a span longer than the clip is cut to it; the sentence opens <think>.

The synthetic stand-in for the two data sets (HIR_SETS, built by `synthetic_manifest`): 1-2 s
clips, so the training sets and the main test sets hold only the spoof families such a clip
can show (MAIN_FAMILIES: a vocoder source, a missing band, no pause, smoothed spectra) under
channels that keep those cues (MAIN_CHANNELS); the prosodic families and no_breath, which a
1-2 s clip or its features cannot show (PROBES.md), make up the hard test set. Sets 1 and 2
are drawn alike from disjoint speakers: the union row measures more data, not a new domain.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import load_audio
from rewards import HIR_TAGS
from synth_speech import CHANNELS, SpeechSet, load_annotations, make_speech_corpora
from train_chat import ChatExample

HL_QUESTION = ("Assess whether the audio sample contains genuine human speech or synthesized "
               "speech. Reply with Final Answer: Real or Final Answer: Fake.")
COT_QUESTION = ("Is this speech real or fake? Think first, list the reasons, then answer. Use "
                "<think> </think>, <reasons> </reasons> and <answer> </answer>. Reasons: "
                + ", ".join(HIR_TAGS) + ".")
SPAN_SECONDS = (0.2, 1.2)  # grounding span length, HIR-SDD code
SAMPLE_RATE = 16000  # Qwen2-Audio's (Whisper's) rate
LABEL_WORDS = {"real": "real", "bonafide": "real", "bona-fide": "real", "fake": "fake",
               "spoof": "fake"}
DATASETS = ("hl", "r", "hard")  # hard-label set 1, reasoning set 2, hard test clips
MAIN_FAMILIES = ("vocoder_buzz", "band_limited", "no_pause", "oversmoothed")
HARD_FAMILIES = ("flat_prosody", "metronome", "odd_stress", "accent", "no_breath")
MAIN_CHANNELS = ("clean", "gain", "reverb")  # noise fills the missing band, telephone cuts it
# One part per 8 speakers (synth_speech draws 8 per set): with 8 voices a split's balanced
# accuracy swings by 10 points between speaker draws (a fixed log-mel probe: 71-84 %), so each
# split is 2-3 parts. role = the records' dataset ("pretrain": the audio pre-training stand-in's
# own clips, not in the manifest); every 3rd clip bona fide, spoof-heavy as HIR-SDD's (77 %).
_PARTS = dict(pretrain=(3, 200, 4, "train"), train=(3, 240, 4, "train"), val=(2, 60, 3, "val"),
              test=(3, 80, 3, "test"))  # split -> (parts, clips per part, quick, split)


def _split_sets(role: str, families: tuple, every: int, channels: tuple, split: str) -> dict:
    parts, size, quick, name = _PARTS[split]
    stem = role if role == split else f"{role}_{split}"
    # parts a, b, c: with 1, 2, 3 the clip hl_test_1/76 hits a generator edge case (a first
    # syllable under 80 ms leaves no syllable: synth_speech._timeline), reported upstream
    return {f"{stem}_{k}": SpeechSet(role, "manifest", every, families, channels, size, quick, name)
            for k in "abc"[:parts]}


HIR_SETS = {**_split_sets("pretrain", MAIN_FAMILIES, 2, CHANNELS, "pretrain"),
            **{k: v for role in ("hl", "r") for split in ("train", "val", "test")
               for k, v in _split_sets(role, MAIN_FAMILIES, 3, MAIN_CHANNELS, split).items()},
            **_split_sets("hard", HARD_FAMILIES, 3, MAIN_CHANNELS, "test")}


# ----------------------------------------------------------------------------- records and targets

def read_hir_manifest(path) -> list:
    """A JSONL manifest of annotations -> records (dicts). One JSON object per line:

        {"path": "clips/0001.flac", "label": "fake", "comment": "Monotone, no pauses.",
         "tags": ["MONOTONY_OF_STYLE"], "split": "train"}

    path relative to the manifest's folder (or absolute); label real | bonafide | bona-fide |
    fake | spoof; comment needed for reasoning targets; tags from HIR_TAGS, none for bona fide;
    split train | val | test (or use `resplit`); dataset hl | r | hard (default r: annotated
    clips are the reasoning set; hard only for test clips); other keys are kept. Blank lines
    are skipped; errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(r, dict) or not isinstance(r.get("path"), str) or not r["path"]:
            raise ValueError(f"{where}: expected an object with a 'path' string")
        label = str(r.get("label", "")).lower()
        if label not in LABEL_WORDS:
            raise ValueError(f"{where}: unknown label {r.get('label')!r} "
                             f"(expected one of {sorted(LABEL_WORDS)})")
        tags = r.get("tags", [])
        if not isinstance(tags, list) or any(t not in HIR_TAGS for t in tags):
            raise ValueError(f"{where}: tags must be a list of {HIR_TAGS}, got {tags!r}")
        if tags and LABEL_WORDS[label] == "real":
            raise ValueError(f"{where}: a bona fide sample carries artifact tags {tags}")
        if not isinstance(r.get("comment", ""), str):
            raise ValueError(f"{where}: comment must be a string")
        if r.get("split", "train") not in ("train", "val", "test"):
            raise ValueError(f"{where}: split must be train, val or test, got {r['split']!r}")
        dataset = r.get("dataset", "r")
        if dataset not in DATASETS or (dataset == "hard" and r.get("split") != "test"):
            raise ValueError(f"{where}: dataset must be one of {DATASETS} (hard: test clips "
                             f"only), got {dataset!r}")
        audio = path.parent.absolute() / r["path"]  # an absolute path stays as it is
        if not audio.is_file():
            raise FileNotFoundError(f"{where}: audio file not found: {audio}")
        records.append(dict(r, path=str(audio), label=LABEL_WORDS[label], tags=list(tags),
                            comment=r.get("comment", "").strip(), dataset=dataset, where=where))
    if not records:
        raise ValueError(f"{path}: manifest has no entries")
    return records


SPLITS = ("train", "val", "test")


def split_records(records: list, resplit: list) -> dict:
    """{(dataset, split): records}: each record's own split, or a random re-split of each of
    the datasets hl and r (hard clips stay test clips)."""
    out = {(d, s): [] for d in DATASETS for s in SPLITS}
    if not resplit:
        if any("split" not in r for r in records):
            raise ValueError(f"{records[0]['where']}: records lack 'split'; set resplit")
        for r in records:
            out[r["dataset"], r["split"]].append(r)
        return out
    if len(resplit) != 3 or min(resplit) < 0 or sum(resplit) <= 0:
        raise ValueError(f"resplit must be three non-negative fractions, got {resplit}")
    out["hard", "test"] = [r for r in records if r["dataset"] == "hard"]
    for d in ("hl", "r"):
        mine = [r for r in records if r["dataset"] == d]
        order = np.random.default_rng(0).permutation(len(mine))  # data, not the run seed
        cut = np.cumsum(resplit) / sum(resplit) * len(mine)
        for s, part in zip(SPLITS, np.split(order, cut[:2].round().astype(int))):
            out[d, s] = [mine[i] for i in part]
    return out


def synthetic_manifest(root, size: str = "default") -> Path:
    """Build (or reuse) the HIR_SETS corpus under root and write root/hir_manifest.jsonl:
    every clip but the pre-training stand-in's, with `dataset` = its set's role."""
    make_speech_corpora(root, seed=0, size=size, domains=HIR_SETS)
    path = Path(root) / "hir_manifest.jsonl"
    rows = [dict(r, path=str(Path(r["path"]).relative_to(Path(root).absolute())),
                 dataset=HIR_SETS[r["set"]].role)
            for r in load_annotations(Path(root).absolute()).values()
            if HIR_SETS[r["set"]].role != "pretrain"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pretraining_clips(root) -> list:
    """(path, spoof family) of the pre-training stand-in's clips ("bonafide" for real)."""
    return [(p, r["family"]) for p, r in load_annotations(Path(root).absolute()).items()
            if HIR_SETS[r["set"]].role == "pretrain"]


def hard_label_target(label: str) -> str:
    """HIR-SDD's hard-label target: "Final Answer: Real" or "Final Answer: Fake"."""
    return f"Final Answer: {label.capitalize()}"


def parse_hard_label(text: str):
    """"real" | "fake" | None: the whole completion must be "Final Answer: Real|Fake"."""
    m = re.fullmatch(r"\s*Final Answer:\s*(Real|Fake)\s*", text, flags=re.IGNORECASE)
    return m.group(1).lower() if m else None


def cot_target(comment: str, tags, label: str) -> str:
    """HIR-SDD's reasoning target: <think>comment</think><reasons>[TAGS]</reasons><answer>X."""
    return (f"<think>{comment}</think><reasons>[{', '.join(tags)}]</reasons>"
            f"<answer>{label.capitalize()}</answer>")


@dataclass(frozen=True)
class Clip:
    """A waveform read when the policy encodes it (`np.asarray(clip)`), cut to `limit`
    samples and, with `grounding` = (seed, i), perturbed as `ground` chose: a real training
    set does not fit in memory, and a perturbation rebuilt from its seed is the same each time."""
    path: str
    limit: int
    grounding: tuple | None = None

    def __array__(self, dtype=None, copy=None):
        x = load_audio(self.path, SAMPLE_RATE)[:self.limit]
        if self.grounding is not None:
            x = perturb_span(x, SAMPLE_RATE, np.random.default_rng([*self.grounding, 1]))[0]
        return x if dtype is None else x.astype(dtype)


def make_examples(records: list, task: str, limit: int, targets: bool = True) -> list:
    """ChatExamples of one task ("hl" | "cot"); meta keeps the reference for judge and Jaccard.
    targets=False (test prompts): no SFT target, so no comment is needed."""
    out = []
    for r in records:
        if task == "cot" and targets and not r["comment"]:
            raise ValueError(f"{r['where']}: empty comment, needed for a reasoning target")
        target = ("" if not targets else hard_label_target(r["label"]) if task == "hl"
                  else cot_target(r["comment"], r["tags"], r["label"]))
        out.append(ChatExample(Clip(r["path"], limit), HL_QUESTION if task == "hl" else
                               COT_QUESTION, r["label"], target,
                               dict(tags=r["tags"], comment=r["comment"], path=r["path"],
                                    family=r.get("family", r["label"]))))
    return out


class CachedFeatures:
    """The audio feature extractor with a per-clip cache: the log-mel of a waveform is computed
    once, not in every batch that holds it. A clip's features do not depend on the other clips
    of its batch (each is padded to the encoder's length on its own), so stacking cached rows
    gives exactly the batch call's output. Keyed by the waveform's bytes, so a perturbed
    (grounded) copy of a clip is its own entry. Memory grows with the distinct clips (tiny
    model: 0.1 MB each; 30 s clips: 1.5 MB each), hence an option of the route."""

    def __init__(self, extractor, cache: dict | None = None):
        self.extractor, self.cache = extractor, {} if cache is None else cache

    def __getattr__(self, name):  # sampling_rate, chunk_length, save_pretrained, ...
        return getattr(self.extractor, name)

    def __call__(self, clips, **kw):
        rows = []
        for x in clips:
            key = (hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest(),
                   len(x), repr(sorted(kw.items())))
            if key not in self.cache:
                self.cache[key] = self.extractor([x], **kw)
            rows.append(self.cache[key])
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0].keys()}


def class_free_examples(hl: list, cot: list, rng: np.random.Generator) -> list:
    """The format stage (departure 2): clip i with the targets of a random other clip j."""
    j = rng.permutation(len(hl))
    return ([dataclasses.replace(ex, target=hl[k].target) for ex, k in zip(hl, j)]
            + [dataclasses.replace(ex, target=cot[k].target) for ex, k in zip(cot, j)])


# ----------------------------------------------------------------------------- grounding

def perturb_span(x: np.ndarray, sr: int, rng: np.random.Generator):
    """One HIR-SDD grounding perturbation of a random 0.2-1.2 s span -> (audio, info).

    kind "gain": the span times 10^(g/20), |g| in [2, 8] dB; "noise": Gaussian noise at an SNR
    of 8-25 dB relative to the whole clip's power; "mask": the span set to 0. The span's ends are
    rounded to 10 ms and are exactly what `grounding_sentence` names: samples [a, b) change,
    nothing else. info = dict(kind, start, end (s), amount (dB; 0 for a mask)).
    """
    length = len(x) / sr
    span = min(rng.uniform(*SPAN_SECONDS), length)
    start = np.floor(rng.uniform(0, length - span) * 100) / 100
    end = round(min(start + round(span, 2), np.floor(length * 100) / 100), 2)
    a, b = round(start * sr), round(end * sr)
    kind = str(rng.choice(("gain", "noise", "mask")))
    y = np.array(x, dtype=np.float32)
    if kind == "gain":
        amount = round(float(rng.choice((-1, 1)) * rng.uniform(2, 8)), 1)
        y[a:b] *= np.float32(10 ** (amount / 20))
    elif kind == "noise":
        amount = round(float(rng.uniform(8, 25)), 1)
        rms = max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-4)
        y[a:b] += (rms * 10 ** (-amount / 20) * rng.standard_normal(b - a)).astype(np.float32)
    else:
        amount = 0.0
        y[a:b] = 0.0
    return y, dict(kind=kind, start=float(start), end=float(end), amount=amount)


def grounding_sentence(info: dict) -> str:
    """The templated <think> sentence that names the perturbation, its span and its amount."""
    span = f"From {info['start']:.2f} s to {info['end']:.2f} s"
    if info["kind"] == "gain":
        way = "rises" if info["amount"] > 0 else "drops"
        return f"{span} the level {way} by {abs(info['amount']):.1f} dB (a gain change)."
    if info["kind"] == "noise":
        return f"{span} there is added Gaussian noise at {info['amount']:.1f} dB SNR."
    return f"{span} the audio is silent (a time mask of {info['end'] - info['start']:.2f} s)."


# Finds the sentence in any text. Test audio is never perturbed, so there every match is false.
GROUNDING_CLAIM = re.compile(r"From \d+\.\d\d s to \d+\.\d\d s ")


def ground(examples: list, seed: int, p: float) -> list:
    """CoT examples with a share p perturbed. Example i's choice comes from the generator of
    (seed, i, 0), its perturbation from (seed, i, 1): nothing else in the run changes them."""
    out = []
    for i, ex in enumerate(examples):
        if np.random.default_rng([seed, i, 0]).random() >= p:
            out.append(ex)
            continue
        clip = dataclasses.replace(ex.media, grounding=(seed, i))
        x = np.asarray(dataclasses.replace(clip, grounding=None))  # read once for the sentence
        info = perturb_span(x, SAMPLE_RATE, np.random.default_rng([seed, i, 1]))[1]
        comment = f"{grounding_sentence(info)} {ex.meta['comment']}"
        out.append(ChatExample(clip, ex.question, ex.label,
                               cot_target(comment, ex.meta["tags"], ex.label),
                               dict(ex.meta, comment=comment, grounding=info)))
    return out
