"""HIR-SDD data (Dvirniak et al. 2026): annotations -> prompts and targets, and grounding.

    record (read_hir_manifest)  -> hard-label target  "Final Answer: Real|Fake"
                                -> reasoning target   <think>comment</think>
                                                      <reasons>[TAG, ...]</reasons>
                                                      <answer>Real|Fake</answer>
    grounding (perturb_span)    -> a 0.2-1.2 s span gets a gain change, Gaussian noise or a time
                                   mask, and a sentence naming it opens <think> (Sec. 4.2)

The formats, the 30 s cut and the grounding recipe follow the paper's public code. Where this
departs from it (the paper leaves these open): a share `p` of the training clips is perturbed,
fixed per clip; a gain change is 2-8 dB up or down (so it is audible); the noise SNR is relative
to the whole clip; a span longer than the clip is cut to it; the sentence opens <think>.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import load_audio
from rewards import HIR_TAGS
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


# ----------------------------------------------------------------------------- records and targets

def read_hir_manifest(path) -> list:
    """A JSONL manifest of annotations -> records (dicts). One JSON object per line:

        {"path": "clips/0001.flac", "label": "fake", "comment": "Monotone, no pauses.",
         "tags": ["MONOTONY_OF_STYLE"], "split": "train"}

    path relative to the manifest's folder (or absolute); label real | bonafide | bona-fide |
    fake | spoof; comment needed for reasoning targets; tags from HIR_TAGS, none for bona fide;
    split train | val | test (or use `resplit`); other keys are kept (synth_speech's
    annotations.jsonl is such a file). Blank lines are skipped; errors name file and line."""
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
        audio = path.parent.absolute() / r["path"]  # an absolute path stays as it is
        if not audio.is_file():
            raise FileNotFoundError(f"{where}: audio file not found: {audio}")
        records.append(dict(r, path=str(audio), label=LABEL_WORDS[label], tags=list(tags),
                            comment=r.get("comment", "").strip(), where=where))
    if not records:
        raise ValueError(f"{path}: manifest has no entries")
    return records


def split_records(records: list, resplit: list) -> dict:
    """{"train", "val", "test"} -> records: each record's own split, or a random re-split."""
    if not resplit:
        if any("split" not in r for r in records):
            raise ValueError(f"{records[0]['where']}: records lack 'split'; set resplit")
        return {s: [r for r in records if r["split"] == s] for s in ("train", "val", "test")}
    if len(resplit) != 3 or min(resplit) < 0 or sum(resplit) <= 0:
        raise ValueError(f"resplit must be three non-negative fractions, got {resplit}")
    order = np.random.default_rng(0).permutation(len(records))  # data, not the run seed
    cut = np.cumsum(resplit) / sum(resplit) * len(records)
    parts = np.split(order, cut[:2].round().astype(int))
    return {s: [records[i] for i in p] for s, p in zip(("train", "val", "test"), parts)}


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


def make_examples(records: list, task: str, limit: int) -> list:
    """ChatExamples of one task ("hl" | "cot"); meta keeps the reference for judge and Jaccard."""
    out = []
    for r in records:
        if task == "cot" and not r["comment"]:
            raise ValueError(f"{r['where']}: empty comment, needed for a reasoning target")
        target = (hard_label_target(r["label"]) if task == "hl"
                  else cot_target(r["comment"], r["tags"], r["label"]))
        out.append(ChatExample(Clip(r["path"], limit), HL_QUESTION if task == "hl" else
                               COT_QUESTION, r["label"], target,
                               dict(tags=r["tags"], comment=r["comment"], path=r["path"])))
    return out


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
