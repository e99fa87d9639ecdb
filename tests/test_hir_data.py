"""HIR-SDD data (hir_data.py): the synthetic stand-in's set table, the built manifest, datasets
and splits, and the per-clip feature cache against the feature extractor's own batch call."""
import json

import numpy as np
import pytest
import torch

from hir_data import (DATASETS, HARD_FAMILIES, HIR_SETS, MAIN_CHANNELS, MAIN_FAMILIES,
                      CachedFeatures, pretraining_clips, read_hir_manifest, split_records,
                      synthetic_manifest)
from synth_speech import FAMILIES
from tiny import tiny_processor


def test_the_set_table_keeps_the_hard_families_out_of_every_training_set():
    assert set(MAIN_FAMILIES) | set(HARD_FAMILIES) == set(FAMILIES)
    assert not set(MAIN_FAMILIES) & set(HARD_FAMILIES)
    for name, s in HIR_SETS.items():
        if s.role == "hard":
            assert s.split == "test" and s.families == HARD_FAMILIES
        else:  # every set a model trains, validates or is tested on in the main tables
            assert s.families == MAIN_FAMILIES and s.role in DATASETS + ("pretrain",)
        if s.role != "pretrain":
            assert s.channels == MAIN_CHANNELS and s.every == 3
    # test sets of >= 200 clips (issue 11) and >= 16 speakers (8 per part) per split
    for role in ("hl", "r", "hard"):
        parts = [s for s in HIR_SETS.values() if s.role == role and s.split == "test"]
        assert sum(s.size for s in parts) >= 200 and len(parts) >= 2
    assert {(s.role, s.split) for s in HIR_SETS.values() if s.role in ("hl", "r")} == {
        (d, sp) for d in ("hl", "r") for sp in ("train", "val", "test")}


@pytest.fixture(scope="module")
def quick_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus_hir")
    return root, synthetic_manifest(root, "quick")


def test_synthetic_manifest_has_every_clip_but_the_pretraining_ones(quick_corpus):
    root, path = quick_corpus
    records = read_hir_manifest(path)
    assert len(records) == sum(s.quick for s in HIR_SETS.values() if s.role != "pretrain")
    for r in records:
        assert r["dataset"] == HIR_SETS[r["set"]].role and r["split"] == HIR_SETS[r["set"]].split
        fams = HARD_FAMILIES if r["dataset"] == "hard" else MAIN_FAMILIES
        assert r["family"] in fams + ("bonafide",) and r["channel"] in MAIN_CHANNELS
    clips = pretraining_clips(root)
    assert len(clips) == sum(s.quick for s in HIR_SETS.values() if s.role == "pretrain")
    assert {f for _, f in clips} <= set(MAIN_FAMILIES) | {"bonafide"}
    splits = split_records(records, [])
    for (d, split), recs in splits.items():
        assert len(recs) == sum(s.quick for s in HIR_SETS.values()
                                if s.role == d and s.split == split)
    assert splits["r", "val"] and not splits["hard", "train"]


def test_resplit_splits_each_dataset_and_leaves_hard_clips_in_test(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    rows = ([dict(path="a.wav", label="fake", dataset="hl", split="train")] * 10
            + [dict(path="a.wav", label="real", split="train")] * 20  # no dataset: "r"
            + [dict(path="a.wav", label="fake", dataset="hard", split="test")] * 3)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    splits = split_records(read_hir_manifest(tmp_path / "m.jsonl"), [0.5, 0.2, 0.3])
    assert [len(splits["hl", s]) for s in ("train", "val", "test")] == [5, 2, 3]
    assert [len(splits["r", s]) for s in ("train", "val", "test")] == [10, 4, 6]
    assert len(splits["hard", "test"]) == 3
    (tmp_path / "bad.jsonl").write_text(json.dumps(dict(rows[-1], split="train")))
    with pytest.raises(ValueError, match=r"bad.jsonl:1: dataset must be one of"):
        read_hir_manifest(tmp_path / "bad.jsonl")


def test_cached_features_equal_the_extractors_batch_call():
    extractor = tiny_processor("audio")
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 24000, 9000)]
    kw = dict(sampling_rate=16000, padding="max_length", return_attention_mask=True,
              return_tensors="pt")
    direct = extractor(clips, **kw)
    cached = CachedFeatures(extractor)
    first = cached(clips, **kw)
    again = cached([clips[2], clips[0]], **kw)  # from the cache, in a new batch order
    assert len(cached.cache) == 3
    for key in ("input_features", "attention_mask"):
        torch.testing.assert_close(first[key], direct[key])
        torch.testing.assert_close(again[key], direct[key][[2, 0]])
    changed = clips[0].copy()
    changed[100] += 0.5  # a perturbed copy (grounding) is a new entry, never the old features
    cached([changed], **kw)
    assert len(cached.cache) == 4 and cached.sampling_rate == 16000 == extractor.sampling_rate
