"""A stand-in for the audio pre-training of a large audio language model (HIR-SDD route, CPU
miniature only).

HIR-SDD fine-tunes SALMONN-7B, whose Whisper and BEATs encoders were pre-trained on a great deal
of audio, so its audio tokens already describe what a listener hears. The miniature's tiny
Qwen2-Audio is random: its encoder's output varies less from clip to clip than its random
position embedding (PROBES.md), and hard-label SFT then learns nothing, not even its training
set. No CPU-sized pre-training on general audio would fix that, so this module trains the
encoder and projector once, before anything else, on a task that needs the cues:

    clip -> log-mel -> audio encoder -> projector -> mean over the clip's audio tokens -> linear
         head -> softmax over the clip's generator family (bona fide or one spoof family)
    loss = cross-entropy;  afterwards the head is dropped

on a set of its own (synth_speech clips of disjoint speakers, hir_data.HIR_SETS["pretrain"]:
the main spoof families under every channel, never the hard families of the hard test table).
What this stand-in is not, said plainly: the cues are the families the detector is later asked
about, so the encoder is closer to a pre-trained spoof detector than to Whisper; the LLM itself
is still random here (the route's format stage teaches it the answer formats). The real path
(Qwen2-Audio-7B by hub id) never runs this.

The encoder+projector state is cached per seed (`pretrained_audio`): a second run with the same
key reuses it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers.masking_utils import create_bidirectional_mask

import train
from data import load_audio


def pooled_audio_tokens(model, input_features, feature_attention_mask):
    """Mean of the projected audio tokens the LLM would receive for each clip -> (B, H).

    The encoder mask and the token count follow Qwen2AudioModel.forward (transformers): the
    conv stack keeps (L - 1) // 2 + 1 of L mel frames, the pooling (that - 2) // 2 + 1 tokens.
    """
    tower, projector = model.model.audio_tower, model.model.multi_modal_projector
    conv_lengths, token_lengths = tower._get_feat_extract_output_lengths(
        feature_attention_mask.sum(-1))                                     # (B,), (B,)
    B, _, L = input_features.shape
    frames = (L - 2) // 2 + 1
    valid = (torch.arange(frames)[None] < conv_lengths[:, None]).long()     # (B, frames)
    mask = create_bidirectional_mask(config=tower.config,
                                     inputs_embeds=torch.zeros(B, frames, 1), attention_mask=valid)
    tokens = projector(tower(input_features, attention_mask=mask).last_hidden_state)  # (B, k, H)
    keep = (torch.arange(tokens.shape[1])[None] < token_lengths[:, None]).to(tokens.dtype)
    return (tokens * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)   # (B, H)


def pretrain_audio(policy, clips: list, steps: int, lr: float, batch_size: int, seed: int,
                   limit: int, out: Path) -> float:
    """Train policy.model's audio encoder + projector with a family head (dropped after) on
    `clips` = [(path, family)]; log loss and accuracy per step to out/metrics.jsonl.
    Returns the mean training accuracy of the last 10 % of the steps."""
    model = policy.model
    families = sorted({f for _, f in clips})
    labels = torch.tensor([families.index(f) for _, f in clips])            # (n,)
    audio = [load_audio(p, policy.processor.sampling_rate)[:limit] for p, _ in clips]
    parts = [model.model.audio_tower, model.model.multi_modal_projector]
    trainable = {id(p): p.requires_grad for m in parts for p in m.parameters()}
    with torch.random.fork_rng(devices=[]):  # the head's init, without touching the global RNG
        torch.manual_seed(train.seed_for(seed, 11))
        head = torch.nn.Linear(model.config.text_config.hidden_size, len(families))
    params = [p for m in parts for p in m.parameters()] + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    log, accs = train.JsonlLog(out / "metrics.jsonl"), []
    model.train()
    for step in tqdm(range(steps), desc="audio pre-training", leave=False):
        idx = train.batch_indices(len(clips), batch_size, seed, step)
        feats = policy.processor([audio[i] for i in idx],
                                 sampling_rate=policy.processor.sampling_rate,
                                 padding="max_length", return_attention_mask=True,
                                 return_tensors="pt")
        logits = head(pooled_audio_tokens(model, feats["input_features"].to(policy.device),
                                          feats["attention_mask"].to(policy.device)))
        loss = F.cross_entropy(logits, labels[idx].to(logits.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        accs.append(float((logits.argmax(-1).cpu() == labels[idx]).float().mean()))
        log.log(step + 1, loss=loss, acc=accs[-1])
    log.close()
    for p in (p for m in parts for p in m.parameters()):  # back to what the route asked for
        p.requires_grad_(trainable[id(p)])
    return float(np.mean(accs[-max(1, steps // 10):]))


def pretrained_audio(policy, clips: list, steps: int, lr: float, batch_size: int, seed: int,
                     limit: int, out: Path) -> float:
    """`pretrain_audio`, or its cached result: out/encoder.pt holds the encoder + projector
    state, out/key.json what it was trained with (clips, steps, lr, batch, seed, model config).
    A matching key loads the state instead of training (a few seconds instead of ~10-20)."""
    model = policy.model
    key = dict(steps=steps, lr=lr, batch_size=batch_size, seed=seed, limit=limit,
               clips=hashlib.sha1(json.dumps(clips).encode()).hexdigest(),
               config=hashlib.sha1(model.config.to_json_string().encode()).hexdigest())
    names = ("model.audio_tower.", "model.multi_modal_projector.")
    out.mkdir(parents=True, exist_ok=True)
    cached = out / "encoder.pt"
    if cached.is_file() and (out / "key.json").is_file() and json.loads(
            (out / "key.json").read_text()).get("key") == key:
        unexpected = model.load_state_dict(torch.load(cached), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{cached}: tensors the model lacks: {unexpected[:3]}")
        return json.loads((out / "key.json").read_text())["result"]
    result = pretrain_audio(policy, clips, steps, lr, batch_size, seed, limit, out)
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith(names)}, cached)
    (out / "key.json").write_text(json.dumps(dict(key=key, result=result), indent=1) + "\n")
    return result
