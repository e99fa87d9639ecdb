"""Classifier route, data: a scored or trained set of utterances, its batches, its scores.

    AudioSet     one protocol (ASVspoof / ADD / In-the-Wild / DFE24 / CSV manifest, data.py) as
                 samples + audio, optionally segmented; the training batch of a step
    batch_plan   which utterances each step takes: fixed batches or dynamic (seconds) ones
    score_set    every utterance scored at full length (long ones in windows): scores and
                 pooled embeddings, the inputs of the EER and of the embedding drift
    set_eer      the EER of one scored set

`cfg` below is a train_classifier.ClassifierConfig (not imported: that module imports this one).
The departures these functions carry are numbered in train_classifier.py (5: windows, batches).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import train
from data import (audio_seconds, chunk_audio, collate_audio, label_to_index, load_audio,
                  segment_samples, train_clip)
from eval import compute_eer
from models import SSLClassifier
from protocols import read_protocol
from rawboost import rawboost


class AudioSet:
    """Samples of one protocol plus audio loading (cached in memory: the miniature is small).

    spec: {"kind", "path", "audio_dir", "name", "domain": in | out, "split": one split of a
    protocol that lists several, "segment": seconds (cut every clip into segments of this length,
    the last one kept at its length), "segments": [seconds, ...] (the union of those
    segmentations: the segmented training set; a *test* spec's "segments" is expanded by the
    experiment into one scored set per length instead)}."""

    KEYS = ("kind", "path", "audio_dir", "name", "domain", "split", "segment", "segments",
            "group")

    def __init__(self, spec: dict, sample_rate: int, cache: bool = True):
        if not isinstance(spec, dict) or "kind" not in spec or "path" not in spec:
            raise ValueError(f"a data set is a dict with at least \"kind\" and \"path\" (and "
                             f"\"audio_dir\" for the ASVspoof and ADD formats), got {spec!r}")
        unknown = sorted(set(spec) - set(self.KEYS))
        if unknown:  # a typo ("splitt") must not silently load the whole protocol
            raise ValueError(f"data set {spec['path']}: unknown key(s) {unknown}; the keys are "
                             f"{', '.join(self.KEYS)}")
        self.name = spec.get("name", Path(spec["path"]).stem)
        self.domain = spec.get("domain", "in")  # test sets: in-domain or out-of-domain
        self.group = spec.get("group", self.name)  # a segmented test set's name
        samples = read_protocol(spec["kind"], spec["path"], spec.get("audio_dir"))
        splits = sorted({s.split for s in samples})
        if spec.get("split"):  # one split of a protocol that lists several (e.g. DFE24)
            samples = [s for s in samples if s.split == spec["split"]]
            if not samples:
                raise ValueError(f"{spec['path']}: no sample of split {spec['split']!r} "
                                 f"(it has {splits})")
        elif len(splits) > 1:  # train, dev and test must not silently become one set
            raise ValueError(f"{spec['path']} holds the splits {splits}: name the one this set "
                             f"is with \"split\", e.g. {{\"split\": \"{splits[0]}\"}}")
        lengths = [spec["segment"]] if spec.get("segment") else spec.get("segments", [])
        if lengths:  # a training set with "segments": the union of every segmentation
            seconds = [audio_seconds(s.path) for s in samples]
            samples = [seg for L in lengths for seg in segment_samples(samples, L, seconds)]
        self.samples, self.sample_rate = samples, sample_rate
        self._cache = {} if cache else None  # path -> waveform
        self.labels = torch.tensor([label_to_index(s.label) for s in self.samples])

    def audio(self, i: int) -> np.ndarray:
        s = self.samples[i]
        x = self._cache.get(s.path) if self._cache is not None else None
        if x is None:
            x = load_audio(s.path, self.sample_rate)
            if self._cache is not None:
                self._cache[s.path] = x
        if "segment" in s.meta:  # [k, start s, end s]
            _, a, b = s.meta["segment"]
            x = x[round(a * self.sample_rate):round(b * self.sample_rate)]
        return x

    @functools.cached_property
    def _seconds(self) -> list:
        return [s.meta["segment"][2] - s.meta["segment"][1] if "segment" in s.meta
                else audio_seconds(s.path) for s in self.samples]

    def seconds(self) -> list:
        """Each sample's duration (segment bounds, else the file header; no decoding). The first
        call reads every header: an unreadable file is named before any work starts."""
        return self._seconds

    def check(self, model: SSLClassifier, scored: bool) -> None:
        """Before any work: every clip long enough for the model (named if not); a set that is
        `scored` (dev, test) holds both classes (an EER needs both)."""
        if scored and len(set(self.labels.tolist())) < 2:
            only = self.samples[0].label
            raise ValueError(f"data set {self.name} holds only {only} trials: its EER needs "
                             f"both real and fake")
        short = [(s, d) for s, d in zip(self.samples, self.seconds())
                 if round(d * self.sample_rate) < model.min_samples()]
        if short:
            s, d = short[0]
            raise ValueError(f"data set {self.name}: {len(short)} clip(s) shorter than the "
                             f"model's receptive field ({model.min_samples()} samples), e.g. "
                             f"{s.path} ({d:.3f} s)")

    def name_of(self, i: int) -> str:
        """The trial name in score files: the path (a segment k: path_seg<k+1>)."""
        s = self.samples[i]
        if "segment" not in s.meta:
            return s.path
        p = Path(s.path)  # AntiDeepfake's segment files: <stem>_seg<k+1><suffix>
        return str(p.with_name(f"{p.stem}_seg{s.meta['segment'][0] + 1}{p.suffix}"))

    def batch(self, idx, positions, cfg, step: int):
        """The training batch of a step: the crop and augmentation of the utterance at
        `position` in the step's global batch derive from (seed, step, position) alone, so a
        process holding part of the batch draws what one process holding all of it would."""
        lo, hi = (int(s * cfg.sample_rate) for s in (cfg.train_min_sec, cfg.train_max_sec))
        waves = []
        for i, pos in zip(idx, positions):
            rng = np.random.default_rng([cfg.seed, step, 1, int(pos)])
            x = train_clip(self.audio(int(i)), rng, lo, hi)
            if cfg.rawboost_algo:
                x = rawboost(x, cfg.rawboost_algo, rng, cfg.sample_rate)
            waves.append(x)
        wav, lengths = collate_audio(waves)
        return wav, lengths, self.labels[np.asarray(idx)]


def batch_plan(cfg, audio_set: AudioSet):
    """(step -> example indices, steps of the stage): fixed batches of batch_size, or dynamic
    batches of at most max_batch_seconds (crops counted at train_max_sec); at most max_epochs."""
    n = len(audio_set.samples)
    if cfg.max_batch_seconds:
        seconds = [min(d, cfg.train_max_sec) for d in audio_set.seconds()]
        plan = train.DynamicBatches(seconds, cfg.max_batch_seconds, cfg.seed)
        per_epochs = plan.steps_in
    else:
        plan = functools.partial(train.batch_indices, n, cfg.batch_size, cfg.seed)
        per_epochs = lambda e: e * max(1, n // cfg.batch_size)  # noqa: E731
    steps = min(cfg.steps, per_epochs(cfg.max_epochs)) if cfg.max_epochs else cfg.steps
    return plan, steps


def _windows(x: np.ndarray, length: int) -> list:
    """Scoring windows of at most `length` samples; a last piece under a quarter window joins
    the one before it (a few hundred samples would give the encoder almost no frame)."""
    pieces = chunk_audio(x, length)
    if len(pieces) > 1 and len(pieces[-1]) < length // 4:
        pieces[-2:] = [np.concatenate(pieces[-2:])]
    return pieces


@torch.no_grad()
def score_set(model: SSLClassifier, audio_set: AudioSet, device, batch_size: int = 16, bf16=False,
              max_seconds: float = 60.0):
    """Score every utterance at full length (no augmentation); return scores and pooled embeddings.

    The score is the logit difference log P(real) - log P(fake): it ranks trials exactly as
    P(real) does, but a confident model's probabilities saturate to 1.0 in float and the ties
    would inflate the EER (the ASVspoof convention puts bona fide first on a tie). A clip longer
    than `max_seconds` is scored in windows whose scores and embeddings are averaged, weighted by
    their lengths (train_classifier.py, departure 5): memory stays that of one window.
    """
    model.eval()
    n, window = len(audio_set.samples), int(max_seconds * audio_set.sample_rate)
    order = np.argsort(audio_set.seconds(), kind="stable")  # similar lengths: little padding
    scores, embs, weight = np.zeros(n), None, np.zeros(n)
    for start in tqdm(range(0, n, batch_size), desc=f"score {audio_set.name}", leave=False):
        pieces = [(int(i), w) for i in order[start:start + batch_size]
                  for w in _windows(audio_set.audio(int(i)), window)]
        for at in range(0, len(pieces), batch_size):
            owner, waves = zip(*pieces[at:at + batch_size])
            wav, lengths = collate_audio(list(waves))
            with train.autocast(device, bf16):
                logits, pooled = model(wav.to(device), lengths.to(device))
            w = lengths.numpy().astype(float)                               # (b,)
            diff = (logits[:, 1] - logits[:, 0]).float().cpu().numpy()      # (b,)
            pooled = pooled.float().cpu().numpy()                           # (b, D)
            if embs is None:
                embs = np.zeros((n, pooled.shape[1]), dtype=np.float64)
            for j, i in enumerate(owner):  # length-weighted sums; divided below
                scores[i] += w[j] * diff[j]
                embs[i] += w[j] * pooled[j]
                weight[i] += w[j]
    return scores / weight, (embs / weight[:, None]).astype(np.float32)


def set_eer(scores: np.ndarray, audio_set: AudioSet) -> float:
    """EER (a fraction) of one scored set."""
    real = audio_set.labels.numpy() == 1
    return compute_eer(scores[real], scores[~real])[0]
