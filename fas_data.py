"""The face route's data: the task prompt, the answer targets, and the examples of a manifest.

A face manifest is a CSV `path,label,attack,domain,split` (protocols.read_manifest): the synthetic
corpus (synth_faces.py), the stand-in's pool (face_pool.py), or the real data sets' frames.
Every image becomes a ChatExample whose media is the image path (the processor opens it when a
batch is built) and whose meta holds its attack type (the rows of Fig. 6).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from protocols import read_manifest
from train_chat import ChatExample

PROMPT = ("Is the face in this image real or fake? Output the thinking process in <thinking> "
          "</thinking> and the final answer in <answer> </answer> tags.")
# Class-free descriptions: they name what to look at, never what is seen, so they fit any face.
DESCRIPTIONS = (
    "I look at the face.",
    "I check the color and the texture of the face.",
    "I look at the skin texture, the lighting and the edges.",
    "I check the color, the texture and the depth of the face in this image.",
    "I look at the eyes, the skin, the light, the edges and the background of this image.",
)


def manifest_splits(manifest, prompt: str = PROMPT) -> dict:
    """(domain, split) -> [ChatExample] of a face manifest (it needs a 'domain' column)."""
    splits = {}
    for s in read_manifest(manifest):
        if "domain" not in s.meta:
            raise ValueError(f"{manifest}: a face manifest needs a 'domain' column")
        ex = ChatExample(s.path, prompt, s.label, meta=dict(attack=s.attack))
        splits.setdefault((s.meta["domain"], s.split), []).append(ex)
    return splits


def pick(splits: dict, domain: str, split: str) -> list:
    if (domain, split) not in splits:
        raise ValueError(f"no '{split}' samples of domain '{domain}' in the manifest")
    return splits[(domain, split)]


def subsample(examples: list, fraction: float, seed: int) -> list:
    """The first round(fraction * n) examples of a seeded permutation (Fig. 4's data volume).

    Deterministic in (examples, seed); smaller fractions are subsets of larger ones.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"data_fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng([seed, 4]).permutation(len(examples))
    keep = max(1, round(fraction * len(examples)))
    return [examples[i] for i in sorted(order[:keep])]


def sft_targets(examples: list, rng: np.random.Generator) -> list:
    """SFT answer targets: a class-free description in <thinking>, the true label in <answer>
    (the paper does not show its SFT answers; this keeps SFT in the format GRPO is paid for)."""
    texts = rng.choice(len(DESCRIPTIONS), len(examples))
    return [dataclasses.replace(ex, target=f"<thinking>{DESCRIPTIONS[t]}</thinking>"
                                           f"<answer>{ex.label}</answer>")
            for ex, t in zip(examples, texts)]
