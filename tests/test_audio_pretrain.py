"""The audio pre-training stand-in (audio_pretrain.py): the pooled audio tokens are the ones the
LLM receives (captured from the model's own forward), training moves only the encoder and the
projector and learns an easy split, and the per-seed cache reloads instead of training."""
import numpy as np
import soundfile as sf
import torch

from audio_pretrain import pooled_audio_tokens, pretrained_audio
from chat import ChatPolicy
from hir_data import HL_QUESTION

SR = 16000


def test_pooled_tokens_are_the_mean_of_the_llms_audio_embeddings():
    policy = ChatPolicy.tiny("audio", seed=4)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (SR * 2, SR, 7000)]
    batch = policy.encode_prompts(clips, [HL_QUESTION] * 3)
    seen = {}
    lm = policy.model.model.language_model
    hook = lm.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        policy.model(**batch)
        pooled = pooled_audio_tokens(policy.model, batch["input_features"],
                                     batch["feature_attention_mask"])
    hook.remove()
    is_audio = batch["input_ids"] == policy.media_token_id                     # (B, P)
    embeds = seen["inputs_embeds"]                                             # (B, P, H)
    expected = torch.stack([embeds[b][is_audio[b]].mean(0) for b in range(3)])
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    assert pooled.shape == (3, policy.model.config.text_config.hidden_size)


def two_family_clips(tmp_path, n=24):
    """Noise ("bonafide") vs a 440 Hz tone ("vocoder_buzz"): any encoder can learn this."""
    rng, t = np.random.default_rng(0), np.arange(SR) / SR
    out = []
    for i in range(n):
        fam = "bonafide" if i % 2 else "vocoder_buzz"
        x = 0.1 * rng.standard_normal(SR) if i % 2 else 0.1 * np.sin(2 * np.pi * 440 * t)
        sf.write(tmp_path / f"{i}.wav", x.astype(np.float32), SR, subtype="FLOAT")
        out.append((str(tmp_path / f"{i}.wav"), fam))
    return out


def test_pretraining_learns_moves_only_the_audio_side_and_is_cached(tmp_path):
    clips = two_family_clips(tmp_path)
    policy = ChatPolicy.tiny("audio", seed=0)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    grads = {n: p.requires_grad for n, p in policy.model.named_parameters()}
    acc = pretrained_audio(policy, clips, steps=40, lr=3e-3, batch_size=8, seed=0, limit=SR,
                           out=tmp_path / "pre")
    assert acc > 0.9  # the mean accuracy of the last 4 steps
    moved = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(("model.audio_tower.", "model.multi_modal_projector."))
                         for n in moved)
    assert {n: p.requires_grad for n, p in policy.model.named_parameters()} == grads
    log = (tmp_path / "pre" / "metrics.jsonl").read_text()
    # a second run with the same key loads the state: no training, the same weights
    again = ChatPolicy.tiny("audio", seed=0)
    assert pretrained_audio(again, clips, 40, 3e-3, 8, 0, SR, tmp_path / "pre") == acc
    assert (tmp_path / "pre" / "metrics.jsonl").read_text() == log
    for n, p in again.model.named_parameters():
        torch.testing.assert_close(p, dict(policy.model.named_parameters())[n])
    # another key (fewer steps) trains again
    third = ChatPolicy.tiny("audio", seed=0)
    pretrained_audio(third, clips, 5, 3e-3, 8, 0, SR, tmp_path / "pre")
    assert len((tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()) == 5
