"""fas_standin.py: the pool's pixel codes against the processor, the patch embedding's matrix
form against its convolution, tower pre-training on a task it can learn, the check, and the
cache key / reuse of the stand-in."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import fas_experiment as fx
import fas_standin as fs
from chat import ChatPolicy
from tiny import tiny_processor


def _images(tmp_path, n, size, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.parametrize("size", [56, 112])
def test_pool_codes_give_back_the_processor_output(tmp_path, size):
    proc = tiny_processor("image")
    paths = _images(tmp_path, 5, size)
    pool = fs.encode_pool(proc, paths, chunk=2)                 # chunks must not matter
    out = proc(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")
    per_image = out["pixel_values"].split(out["image_grid_thw"].prod(-1).tolist())
    for idx in ([0], [4, 1], [2, 3, 0]):
        pv, grid = pool.pixels(idx)
        assert torch.equal(grid, out["image_grid_thw"][idx])
        assert torch.allclose(pv, torch.cat([per_image[i] for i in idx]), atol=1e-6)
    assert pool.codes.dtype == torch.uint8


def test_matmul_patch_embedding_equals_the_convolution_and_is_restored():
    visual = ChatPolicy.tiny("image", seed=1).model.model.visual
    weight = visual.patch_embed.proj.weight.requires_grad_(True)       # (D, C, T, P, P)
    x = torch.randn(10, weight[0].numel())                              # 10 patches, flattened
    conv = visual.patch_embed(x)                                        # (10, D) by Conv3d
    conv_grad, = torch.autograd.grad((conv ** 2).sum(), weight)
    with fs.matmul_patch_embed(visual):
        mat = visual.patch_embed(x)
        mat_grad, = torch.autograd.grad((mat ** 2).sum(), weight)
    assert torch.allclose(mat, conv, atol=1e-5)
    assert torch.allclose(mat_grad, conv_grad, atol=1e-4)
    assert "forward" not in vars(visual.patch_embed)                # the class's forward again


def test_image_embeddings_are_mean_and_max_of_each_images_tokens():
    visual = ChatPolicy.tiny("image", seed=2).model.model.visual
    proc = tiny_processor("image")
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (56, 112)]
    out = proc(images=ims, return_tensors="pt")
    with torch.no_grad():
        emb = fs.image_embeddings(visual, out["pixel_values"], out["image_grid_thw"])
        for i, im in enumerate(ims):        # one image at a time: its own tokens, averaged
            one = proc(images=[im], return_tensors="pt")
            tokens = visual(one["pixel_values"], grid_thw=one["image_grid_thw"]).pooler_output
            assert torch.allclose(emb[i], torch.cat([tokens.mean(0), tokens.max(0).values]),
                                  atol=1e-5)


def test_tower_pretraining_learns_a_visible_difference(tmp_path):
    """Bona fide = smooth grey noise, 'print' = the same with a 4-px stripe pattern: a tower
    that learns anything separates them; the random tower with a zero head cannot (HTER 0.5)."""
    rng = np.random.default_rng(0)
    paths, attacks = [], []
    stripes = (np.arange(56) % 4 < 2)[None, :, None] * 60.0
    for i in range(80):
        base = rng.normal(128, 20, (56, 56, 3))
        img = base + (stripes if i % 2 else 0)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1])
        attacks.append("print" if i % 2 else "real")
    policy = ChatPolicy.tiny("image", seed=0)
    pool = fs.encode_pool(policy.processor, paths)
    cfg = fx.FasConfig(tower_steps=60, tower_lr=3e-3, tower_batch=16, seed=0)
    report = fs.pretrain_tower(policy, pool, attacks, list(range(60)), list(range(60, 80)), cfg,
                               tmp_path / "tower")
    assert report["dev_hter"] <= 0.1
    assert not any(p.requires_grad for p in policy.model.model.visual.parameters())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "tower" / "metrics.jsonl")
              .read_text().splitlines()]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def test_check_tower_refuses_a_tower_that_did_not_learn():
    cfg = fx.FasConfig(tower_max_hter=0.2)
    fs.check_tower(dict(dev_hter=0.2), cfg)
    with pytest.raises(RuntimeError, match="pool-dev HTER 20.1 %"):
        fs.check_tower(dict(dev_hter=0.201), cfg)
    fs.check_tower(dict(dev_hter=0.5), dataclasses.replace(cfg, quick=True))   # toy sizes


def test_cache_keys_follow_exactly_their_fields():
    cfg = fx.FasConfig()
    for fields in (fs.TOWER_FIELDS, fs.STANDIN_FIELDS):
        key = fs.cache_key(cfg, fields)
        assert key.startswith("seed0-") and fs.cache_key(fx.FasConfig(), fields) == key
        for name in fields:
            value = getattr(cfg, name)
            other = (not value) if isinstance(value, bool) else value + 1
            assert fs.cache_key(dataclasses.replace(cfg, **{name: other}), fields) != key, name
        # options of the fine-tuning stages touch neither
        for change in (dict(grpo_steps=7), dict(lr=0.5), dict(out_dir="elsewhere"),
                       dict(methods=["sft"])):
            assert fs.cache_key(dataclasses.replace(cfg, **change), fields) == key
    # the language-model stage's options change the stand-in, not the tower
    lm = dataclasses.replace(cfg, standin_steps=cfg.standin_steps + 1)
    assert fs.cache_key(lm, fs.TOWER_FIELDS) == fs.cache_key(cfg, fs.TOWER_FIELDS)
    assert set(fs.TOWER_FIELDS) < set(fs.STANDIN_FIELDS)


def test_standin_is_built_once_and_reused(tmp_path):
    cfg = dataclasses.replace(fx.FasConfig(corpus_root=str(tmp_path / "corpus"),
                                           standin_root=str(tmp_path / "standin"), quick=True,
                                           device="cpu"), **fx.QUICK)
    folder = fs.build_standin(cfg)
    info = folder.parent / "standin.json"
    report, stamp = json.loads(info.read_text()), info.stat().st_mtime_ns
    assert report["key"]["seed"] == 0 and 0 <= report["tower"]["dev_hter"] <= 1
    assert fs.build_standin(cfg) == folder and info.stat().st_mtime_ns == stamp
    # the saved stand-in answers like the model that was trained (greedy, same images)
    policy = ChatPolicy.from_pretrained(str(folder), "image")
    assert not any(p.requires_grad for p in policy.model.model.visual.parameters())
    other = fs.build_standin(dataclasses.replace(cfg, seed=1))
    assert other != folder and other.parent.name.startswith("seed1-")
    # another language-model stage on the same tower: the tower is loaded, not trained again
    towers = sorted((tmp_path / "standin" / "towers").glob("*/tower.json"))
    stamps = [t.stat().st_mtime_ns for t in towers]
    lm = fs.build_standin(dataclasses.replace(cfg, standin_steps=cfg.standin_steps + 1))
    assert lm != folder and [t.stat().st_mtime_ns for t in towers] == stamps
    visual = lambda path: ChatPolicy.from_pretrained(str(path), "image").model.model.visual
    assert all(torch.equal(a, b) for a, b in zip(visual(folder).state_dict().values(),
                                                  visual(lm).state_dict().values()))
