"""The face route's stand-in for a pre-trained VLM (CPU miniature only).

The face paper fine-tunes Qwen2.5-VL-7B-Instruct, a model that arrives able to see: its
zero-shot answers already catch some attacks (its Table 2: FRR 0 %, FAR 55-60 %). A tiny
randomly initialised Qwen2.5-VL sees nothing: its vision tower is random, so every fine-tuning
method learns the source room's colours instead of attack traces. The stand-in gives the tiny
model a little of what pre-training gives the real one, in two stages, both on the broad face
pool of face_pool.py (rooms and cameras unlike any corpus domain, all ten attack types):

  1. vision pre-training: the vision tower, with a linear head on the mean and maximum of its
     image tokens, learns to name the presentation (bona fide or one of ten attack types),
     `tower_steps` steps of cross-entropy; the head is then dropped and the tower frozen for
     good. It must reach a pool-dev HTER <= `tower_max_hter` before anything is built on it
     (`check_tower`).
  2. a short labelled SFT of the language model on the pool (`standin_steps` steps, the class-
     free description + true label targets of fas_data.sft_targets), so that the model answers
     in the format and its zero-shot answers carry information: neither 50 % by construction
     nor already solved, since the corpus domains' rooms and cameras are new to it.

The result is saved once per (seed, set-up) under `standin_root` and reused (`cache_key`);
the tower alone is cached too, so a change of the language-model stage does not redo stage 1.
It stands in for pre-training; it is not a reproduction of Qwen2.5-VL's. The real recipe
starts from the hub model and skips all of this.

Departures, numbered (the paper has no stand-in; these are the miniature's own choices):
1. The tower learns from labels of the pool (attack types), a supervised stand-in for the
   real model's web-scale pre-training; its head is dropped, so the language model never sees
   an attack-type name.
2. The pool holds every attack type of the corpus, the targets' unseen ones too: a web-trained
   VLM has seen pictures of masks and make-up; it has not seen these data sets' rooms.
3. During tower pre-training the patch embedding's Conv3d (kernel = stride = patch) runs as
   the matrix product it equals (`matmul_patch_embed`): torch's CPU convolution backward is
   ~50x slower than that product; the weights are the same Parameter, nothing is copied.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import train
from eval import frr_far_hter, per_attack_error_rates
from face_pool import ATTACKS, POOL, QUICK_POOL_N, make_face_pool
from fas_data import manifest_splits, pick, sft_targets
from rewards import parse_answer
from train_chat import generate_answers, load_policy, sft_stage

CLASSES = ("real", *ATTACKS)        # the tower head's classes: bona fide + ten attack types
# The options a pre-trained tower depends on, and those the whole stand-in depends on: the
# same values, the same tower / stand-in (reused from standin_root).
TOWER_FIELDS = ("seed", "corpus_seed", "image_size", "pool_n", "tower_steps", "tower_lr",
                "tower_batch", "quick")
STANDIN_FIELDS = (*TOWER_FIELDS, "standin_steps", "standin_lr", "batch_size", "max_new_tokens")


# ----------------------------------------------------------------------------- pool pixels

@dataclasses.dataclass
class PoolPixels:
    """The processor's patches of many images, kept as uint8 codes (4x smaller than float32).

    The processor maps a pixel value v in 0..255 to (v / 255 - mean_c) / std_c and lays each
    patch out as (C, T, P, P) with the T = 2 temporal copies of a still image equal; `codes`
    keeps one copy as the integers v, (n_patches, C, P, P), and `pixels` maps them back.
    """
    codes: torch.Tensor      # (n_patches, C, P, P) uint8
    grid_thw: torch.Tensor   # (n_images, 3)
    mean: torch.Tensor       # (C,)
    std: torch.Tensor        # (C,)
    temporal: int            # T

    def __post_init__(self):
        sizes = self.grid_thw.prod(-1)
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])

    def pixels(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (sum of patches, C*T*P*P) float32 and grid_thw (len(idx), 3) of images idx."""
        rows = torch.cat([torch.arange(self.starts[i], self.starts[i + 1]) for i in idx])
        v = self.codes[rows].float() / 255                              # (n, C, P, P)
        v = (v - self.mean[:, None, None]) / self.std[:, None, None]
        v = v[:, :, None].expand(-1, -1, self.temporal, -1, -1)        # (n, C, T, P, P)
        return v.reshape(len(rows), -1), self.grid_thw[list(idx)]


def encode_pool(processor, paths: list, chunk: int = 256) -> PoolPixels:
    """Run the processor once over every image (in chunks) and keep its patches as codes."""
    mean, std = (torch.tensor(processor.image_mean), torch.tensor(processor.image_std))
    T, P = processor.temporal_patch_size, processor.patch_size
    codes, grids = [], []
    for start in range(0, len(paths), chunk):
        out = processor(images=[Image.open(p).convert("RGB") for p in paths[start:start + chunk]],
                        return_tensors="pt")
        pv = out["pixel_values"].view(-1, len(mean), T, P, P)[:, :, 0]  # (n, C, P, P)
        v = (pv * std[:, None, None] + mean[:, None, None]) * 255
        codes.append(v.round().clamp(0, 255).to(torch.uint8))
        grids.append(out["image_grid_thw"])
    return PoolPixels(torch.cat(codes), torch.cat(grids), mean, std, T)


# ----------------------------------------------------------------------------- vision tower

@contextlib.contextmanager
def matmul_patch_embed(visual):
    """Inside: the patch embedding computes x @ W^T with W = its Conv3d weight flattened to
    (D, C*T*P*P), equal to the convolution whose kernel and stride are the whole patch
    (departure 3). The forward is restored on exit."""
    embed = visual.patch_embed

    def forward(self, hidden_states):
        w = self.proj.weight                                             # (D, C, T, P, P)
        x = hidden_states.to(w.dtype).reshape(-1, w[0].numel())
        return torch.nn.functional.linear(x, w.reshape(w.shape[0], -1))  # (n_patches, D)
    embed.forward = types.MethodType(forward, embed)
    try:
        yield
    finally:
        del embed.forward                                                # back to the class's


def image_embeddings(visual, pixel_values, grid_thw) -> torch.Tensor:
    """(n_images, 2 D): the mean and the maximum over each image's merged vision tokens (what
    the LM reads). The maximum lets a cue in one token (a tattoo on a cheek) reach the head
    undiluted: on the pool it gave 18 % dev HTER where the mean alone gave 22 % (seed 0)."""
    tokens = visual(pixel_values, grid_thw=grid_thw).pooler_output      # (sum k_i, D)
    k = (grid_thw.prod(-1) // visual.spatial_merge_size ** 2).tolist()
    return torch.stack([torch.cat([t.mean(0), t.amax(0)]) for t in tokens.split(k)])


def tower_predictions(visual, head, pool: PoolPixels, idx: list, chunk: int = 200) -> list:
    """'real' when the head gives the bona fide class probability >= 0.5, else 'fake'."""
    preds = []
    with torch.no_grad(), matmul_patch_embed(visual):
        for start in range(0, len(idx), chunk):
            p = head(image_embeddings(visual, *pool.pixels(idx[start:start + chunk])))
            preds += ["real" if q >= 0.5 else "fake" for q in p.softmax(-1)[:, 0].tolist()]
    return preds


def pretrain_tower(policy, pool: PoolPixels, attacks: list, train_idx: list, dev_idx: list,
                   cfg, out: Path) -> dict:
    """Stage 1: cross-entropy over CLASSES on the mean image token through a linear head,
    AdamW, linear warm-up over the first 5 % of `tower_steps`, then cosine decay to 0. Returns the
    pool-dev HTER and per-attack error rates of the final tower; the tower is frozen again."""
    visual = policy.model.model.visual
    visual.requires_grad_(True)
    head = torch.nn.Linear(2 * visual.config.out_hidden_size, len(CLASSES))
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)  # no RNG: deterministic
    params = [*visual.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.tower_lr, weight_decay=0.01)
    steps = cfg.tower_steps
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * s / steps)))
    y = torch.tensor([CLASSES.index(a) for a in attacks])
    log = train.JsonlLog(out / "metrics.jsonl")
    visual.train()
    with matmul_patch_embed(visual):
        for step in range(steps):
            rows = [train_idx[i] for i in train.batch_indices(len(train_idx), cfg.tower_batch,
                                                              cfg.seed, step)]
            logits = head(image_embeddings(visual, *pool.pixels(rows)))   # (b, len(CLASSES))
            loss = torch.nn.functional.cross_entropy(logits, y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(), sched.step()
            log.log(step + 1, loss=loss, grad_norm=grad_norm, lr=sched.get_last_lr()[0])
    log.close()
    visual.eval().requires_grad_(False)
    preds = tower_predictions(visual, head, pool, dev_idx)
    labels = ["real" if attacks[i] == "real" else "fake" for i in dev_idx]
    rates = frr_far_hter(preds, labels)
    return dict(dev_hter=rates.hter, dev_frr=rates.frr, dev_far=rates.far,
                per_attack=per_attack_error_rates(preds, labels, [attacks[i] for i in dev_idx]))


def check_tower(report: dict, cfg) -> None:
    """Refuse a stand-in whose tower did not learn the pool (skipped at --quick toy sizes)."""
    if not cfg.quick and report["dev_hter"] > cfg.tower_max_hter:
        raise RuntimeError(f"stand-in vision tower: pool-dev HTER {100 * report['dev_hter']:.1f} "
                           f"% > tower_max_hter {100 * cfg.tower_max_hter:.0f} %; raise "
                           f"tower_steps or pool_n")


# ----------------------------------------------------------------------------- the stand-in

def cache_key(cfg, fields) -> str:
    """seed<S>-<hash of the values of `fields`>: one folder per seed and set-up."""
    values = json.dumps({k: getattr(cfg, k) for k in fields}, sort_keys=True)
    return f"seed{cfg.seed}-{hashlib.sha1(values.encode()).hexdigest()[:10]}"


def pretrained_tower(cfg, policy, train_ex: list, dev_ex: list) -> dict:
    """Stage 1 with its cache: load the tower of this TOWER_FIELDS key into `policy` if one
    was saved (tower.json is written last), else pre-train, check and save it. Returns the
    tower's report. Changing only the language-model stage then reuses the tower."""
    folder = Path(cfg.standin_root) / "towers" / cache_key(cfg, TOWER_FIELDS)
    visual = policy.model.model.visual
    if (folder / "tower.json").exists():
        visual.load_state_dict(torch.load(folder / "visual.pt"))
        return json.loads((folder / "tower.json").read_text())
    examples = train_ex + dev_ex
    pool = encode_pool(policy.processor, [ex.media for ex in examples])
    report = pretrain_tower(policy, pool, [ex.meta["attack"] for ex in examples],
                            list(range(len(train_ex))), list(range(len(train_ex), len(examples))),
                            cfg, folder)
    check_tower(report, cfg)
    torch.save(visual.state_dict(), folder / "visual.pt")
    (folder / "tower.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def pool_root(cfg) -> Path:
    return Path(cfg.corpus_root) / ("pool_quick" if cfg.quick else "pool")


def pool_splits(cfg) -> dict:
    """The stand-in's pool, built once under corpus_root and shared by every seed."""
    index = make_face_pool(pool_root(cfg), cfg.corpus_seed, cfg.image_size,
                           QUICK_POOL_N if cfg.quick else cfg.pool_n)
    return manifest_splits(pool_root(cfg) / index["manifest"])


def build_standin(cfg) -> Path:
    """The stand-in's model folder: reused when `standin.json` of its STANDIN_FIELDS key
    exists (it is written last), else built from the pool by the two stages of the module
    docstring; its report (tower and stand-in pool-dev HTER, seconds) goes to standin.json."""
    folder = Path(cfg.standin_root) / cache_key(cfg, STANDIN_FIELDS)
    if (folder / "standin.json").exists():
        return folder / "model"
    t0 = time.time()
    splits = pool_splits(cfg)
    train_ex, dev_ex = pick(splits, POOL, "train"), pick(splits, POOL, "dev")
    policy = load_policy(cfg, "tiny", "image")
    tower = pretrained_tower(cfg, policy, train_ex, dev_ex)
    sft = dataclasses.replace(cfg, lr=cfg.standin_lr, resume="")
    sft_stage(policy, sft_targets(train_ex, np.random.default_rng([cfg.seed, 3])), sft,
              folder / "lm", cfg.standin_steps)
    preds = [parse_answer(t) for t in generate_answers(policy, dev_ex, cfg)]
    rates = frr_far_hter(preds, [ex.label for ex in dev_ex])
    policy.save(folder / "model")
    report = dict(key={k: getattr(cfg, k) for k in STANDIN_FIELDS}, pool=str(pool_root(cfg)),
                  tower=tower, vlm_dev=dict(hter=rates.hter, frr=rates.frr, far=rates.far),
                  seconds=round(time.time() - t0, 1))
    (folder / "standin.json").write_text(json.dumps(report, indent=1) + "\n")
    return folder / "model"
