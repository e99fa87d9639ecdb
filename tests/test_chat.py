"""ChatPolicy (chat.py) on the tiny real-class models, against independent numbers: hand-worked
token counts, the encoders' own output lengths, the logits the model produced while sampling
with its KV cache, full forwards of the model's own top-level `forward`, and HF's loss."""

import numpy as np
import pytest
import torch
from PIL import Image

from chat import ChatPolicy, Rollout, completion_mask, take_rows
from lora import lora_modules
from tiny import SPECIAL_TOKENS, tiny_config, tiny_tokenizer

QUESTIONS = ["Is it real?", "Is the face in this image real or fake? Think, then answer."]


def image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def clip(samples, seed=0):
    return 0.1 * np.random.default_rng(seed).standard_normal(samples).astype(np.float32)


MEDIA = dict(
    image=lambda: [image(60, 90), image(120, 90, seed=1)],
    audio=lambda: [clip(16000), clip(6000, seed=1)],  # 1.0 s and 0.375 s at 16 kHz
    text=lambda: None,
)


@pytest.fixture(scope="module", params=["image", "audio", "text"])
def policy(request):
    return ChatPolicy.tiny(request.param)


def prompt_batch(policy, questions=QUESTIONS):
    return policy.encode_prompts(MEDIA[policy.modality](), questions)


def randomize_B(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.copy_(0.2 * torch.randn(m.lora_B.weight.shape, generator=g))


# ------------------------------------------------------------------ tokenizer, prompts, counts
def test_tiny_tokenizer_is_deterministic_and_matches_configs():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab() and 300 <= len(a) <= 800
    assert a.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    text = "<thinking>The skin looks natural.</thinking><answer>real</answer> é"
    assert a.decode(a(text, add_special_tokens=False)["input_ids"]) == text
    image_cfg, audio_cfg = tiny_config("image", a), tiny_config("audio", a)
    assert image_cfg.image_token_id == a.convert_tokens_to_ids("<|image_pad|>")
    assert image_cfg.vision_start_token_id == a.convert_tokens_to_ids("<|vision_start|>")
    assert audio_cfg.audio_token_id == a.convert_tokens_to_ids("<|AUDIO|>")
    assert image_cfg.text_config.eos_token_id == a.convert_tokens_to_ids("<|im_end|>")
    assert image_cfg.text_config.pad_token_id == a.pad_token_id


def test_prompt_layout_image():
    pol = ChatPolicy.tiny("image")
    batch = pol.encode_prompts([image(60, 90)], ["Is it real?"])
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>Is it real?<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert pol.tokenizer.decode(batch["input_ids"][0]) == expected


def test_image_token_count():
    pol = ChatPolicy.tiny("image")
    batch = prompt_batch(pol)
    # Hand-worked: smart_resize to multiples of 28 -> 56x84 and 112x84 -> 4x6 and 8x6 patches of
    # 14 px -> 24 and 48 patches -> 2x2 merge -> 6 and 12 tokens.
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6], [1, 8, 6]]
    assert (batch["input_ids"] == pol.model.config.image_token_id).sum(1).tolist() == [6, 12]
    assert batch["mm_token_type_ids"].sum(1).tolist() == [6, 12]
    with torch.no_grad():  # what the vision tower really emits per image
        feats = pol.model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    assert [f.shape[0] for f in feats.pooler_output] == [6, 12]
    # left padding: the prompts differ by 6 image tokens + the questions' lengths
    q = [len(pol.tokenizer(x)["input_ids"]) for x in QUESTIONS]
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[1] - lengths[0] == 6 + q[1] - q[0] and batch["attention_mask"][0, 0] == 0
    big = pol.encode_prompts([image(500, 500)], ["?"])  # max_pixels = 112*112 caps it at 16 tokens
    assert big["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_audio_token_count():
    pol = ChatPolicy.tiny("audio")
    clips = [clip(16000), clip(8000), clip(48000)]  # 1 s, 0.5 s, 3 s (cut to the 2 s window)
    batch = pol.encode_prompts(clips, ["a", "b", "c"])
    L = batch["feature_attention_mask"].sum(1)
    assert L.tolist() == [100, 50, 200]  # 10 ms hop
    k = (batch["input_ids"] == pol.model.config.audio_token_id).sum(1)
    assert k.tolist() == [25, 12, 50]  # ((L-1)//2+1-2)//2+1, worked by hand
    tower = pol.model.model.audio_tower
    with torch.no_grad():  # the encoder's own front end run on exactly L frames
        for i, n in enumerate(L.tolist()):
            x = torch.nn.functional.gelu(tower.conv1(batch["input_features"][i:i + 1, :, :n]))
            x = tower.avg_pooler(torch.nn.functional.gelu(tower.conv2(x)))
            assert x.shape[-1] == k[i]
        pol.model(**batch)  # the model's own check: audio features == <|AUDIO|> tokens
    with pytest.raises(ValueError):
        pol.encode_prompts([clip(800)], ["too short"])  # 50 ms -> 1 token


# ------------------------------------------------------------------ EOS mask
def test_completion_mask_hand_made():
    eos = [2, 0]  # <|im_end|>, <|endoftext|>; pad is <|endoftext|> = 0, itself an EOS
    ids = torch.tensor([
        [2, 5, 5, 0],   # EOS first: only the EOS is kept (an empty answer that stops)
        [5, 6, 7, 2],   # EOS last
        [5, 6, 7, 8],   # no EOS: everything counts (truncated at max_new_tokens)
        [5, 0, 0, 0],   # <|endoftext|> as EOS, then pads that equal it
        [5, 2, 6, 2],   # two EOS: only the first ends the completion
    ])
    expected = [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert completion_mask(ids, eos).tolist() == expected


def test_decode_stops_before_eos():
    pol = ChatPolicy.tiny("text")
    tok = pol.tokenizer
    a = tok("<answer>real</answer>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([a + [pol.im_end_id] + a, a + a + a[:1]])
    mask = completion_mask(ids, pol.eos_ids)
    answer = "<answer>real</answer>"
    assert pol.decode(ids, mask) == [answer, answer * 2 + "<answer>"]


# ------------------------------------------------------------------ generate
def test_generate_shapes_grouping_and_seeds(policy):
    batch = prompt_batch(policy)
    rng_state = torch.random.get_rng_state()
    r = policy.generate(batch, num_generations=3, max_new_tokens=8, seed=11)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # caller's RNG untouched
    assert r.completion_ids.shape[0] == 6 and r.completion_ids.shape[1] <= 8 and len(r.texts) == 6
    assert r.num_generations == 3
    rows = r.batch["input_ids"]
    # each prompt's N samples are adjacent rows, as grpo.group_advantages expects
    assert all(torch.equal(rows[i], batch["input_ids"][i // 3]) for i in range(6))
    assert torch.equal(r.completion_mask, completion_mask(r.completion_ids, policy.eos_ids))
    again = policy.generate(batch, num_generations=3, max_new_tokens=8, seed=11)
    other = policy.generate(batch, num_generations=3, max_new_tokens=8, seed=12)
    assert torch.equal(again.completion_ids, r.completion_ids) and again.texts == r.texts
    assert not torch.equal(other.completion_ids, r.completion_ids)


def test_generate_stops_at_the_first_eos():
    pol = ChatPolicy.tiny("audio")
    # Make stopping likely: +3 on the EOS logits, for sampling and scoring alike.
    def favour_eos(module, args, out):
        out[..., pol.eos_ids] += 3.0
    hook = pol.model.lm_head.register_forward_hook(favour_eos)
    try:
        r = pol.generate(prompt_batch(pol), 4, max_new_tokens=12, top_p=0.9, seed=0)
    finally:
        hook.remove()
    lengths = r.completion_mask.sum(1)
    assert (lengths < r.completion_ids.shape[1]).any()  # some rows stopped early
    for row, logps, n, text in zip(r.completion_ids, r.sample_logps, lengths.tolist(), r.texts):
        assert (logps[:n] < 0).all()  # a log-prob for every sampled token ...
        if n < len(row) or row[-1] in pol.eos_ids:
            assert row[n - 1] in pol.eos_ids  # the mask ends on the first EOS ...
            assert (row[:n - 1, None] != torch.tensor(pol.eos_ids)).all()
            assert (row[n:] == pol.pad_id).all()  # ... and generate padded after it
            assert (logps[n:] == 0).all()  # ... and none for the padding
            assert text == pol.tokenizer.decode(row[:n - 1], skip_special_tokens=True)


# ------------------------------------------------------------------ log-probs
def sampled_logits(policy, batch, **kw):
    """The logits lm_head produced at each sampling step (KV-cache path), captured by a hook."""
    steps = []
    # HF generate's lm_head sees (R, 1, H), the decode loop's (R, H): keep the last position
    hook = policy.model.lm_head.register_forward_hook(
        lambda m, i, out: steps.append(out.view(out.shape[0], -1, out.shape[-1])[:, -1]))
    try:
        rollout = policy.generate(batch, **kw)
    finally:
        hook.remove()
    return rollout, torch.stack(steps, 1)  # (B*N, T, V)


@pytest.mark.parametrize("sampler", ["loop", "hf"])
def test_logps_equal_the_sampling_steps(policy, sampler):
    temperature = 0.7
    rollout, logits = sampled_logits(policy, prompt_batch(policy), num_generations=2,
                                     max_new_tokens=10, temperature=temperature, seed=3,
                                     sampler=sampler)
    logits[..., policy.suppressed_ids] = float("-inf")  # the tokens generate may not sample
    step = (logits / temperature).log_softmax(-1)
    step = step.gather(-1, rollout.completion_ids[..., None])[..., 0]  # (B*N, T)
    m = rollout.completion_mask.bool()
    for chunk_size, shared in ((1, True), (64, True), (4, False)):
        logps = policy.completion_logps(rollout, temperature, chunk_size, False, shared)
        torch.testing.assert_close(logps[m], step[m], atol=2e-5, rtol=1e-4)
    # Scoring at another temperature is a different distribution: the ratio would be biased.
    wrong = policy.completion_logps(rollout, 1.0, with_grad=False)
    assert not torch.allclose(wrong[m], step[m], atol=1e-3)


def test_left_padding_does_not_change_logps(policy):
    media = MEDIA[policy.modality]()
    batch = policy.encode_prompts(media, QUESTIONS)
    assert (batch["attention_mask"] == 0).any()  # the two prompts really differ in length
    N = 2
    rollout = policy.generate(batch, N, max_new_tokens=8, seed=5)
    together = policy.completion_logps(rollout, with_grad=False)
    for b in range(2):
        alone = policy.encode_prompts(None if media is None else media[b:b + 1], QUESTIONS[b:b + 1])
        rows = torch.arange(b * N, (b + 1) * N)
        single = Rollout(take_rows(alone, torch.zeros(N, dtype=torch.long)),
                         rollout.completion_ids[rows], rollout.completion_mask[rows], [], N)
        torch.testing.assert_close(policy.completion_logps(single, with_grad=False),
                                   together[rows], atol=2e-5, rtol=1e-4)


def test_reference_with_adapters_off_equals_base_model():
    base = ChatPolicy.tiny("image", seed=0)
    pol = ChatPolicy.tiny("image", seed=0, lora=dict(r=4, alpha=8))
    randomize_B(pol.model)
    rollout = pol.generate(prompt_batch(pol), 2, max_new_tokens=8, seed=0)
    ref = pol.reference_logps(rollout)
    torch.testing.assert_close(ref, base.completion_logps(rollout, with_grad=False))
    assert not torch.allclose(pol.completion_logps(rollout, with_grad=False), ref, atol=1e-3)
    # Full fine-tuning: the reference is an explicit frozen copy.
    with pytest.raises(ValueError):
        base.reference_logps(rollout)
    frozen = base.frozen_copy()
    assert not any(p.requires_grad for p in frozen.model.parameters())
    torch.testing.assert_close(base.reference_logps(rollout, reference=frozen), ref)


# ------------------------------------------------------------------ losses and one step
def test_sft_loss_is_completion_only():
    pol = ChatPolicy.tiny("image")
    batch = prompt_batch(pol)
    targets = ["<thinking>flat shading</thinking><answer>fake</answer>", "<answer>real</answer>"]
    loss = pol.sft_loss(batch, targets)
    # Independent: the model's own top-level forward over the whole sequence, then
    # cross-entropy with the prompt's targets set to -100 (ignored), as HF labels do.
    r = pol.encode_targets(batch, targets)
    ids = torch.cat([batch["input_ids"], r.completion_ids], 1)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(r.completion_ids)], 1)
    types = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(r.completion_ids)], 1)
    with torch.no_grad():
        logits = pol.model(input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
                           pixel_values=batch["pixel_values"],
                           image_grid_thw=batch["image_grid_thw"]).logits
    logits[..., pol.suppressed_ids] = float("-inf")  # the policy's distribution (see chat.py)
    labels = torch.cat([torch.full_like(batch["input_ids"], -100),
                        r.completion_ids.masked_fill(r.completion_mask == 0, -100)], 1)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:],
                                           ignore_index=-100)
    torch.testing.assert_close(loss, ce, atol=1e-5, rtol=1e-5)
    # Giving the prompt positions targets (here: the next prompt token) changes HF's loss, so
    # the equality above really pins down that prompt positions are ignored.
    prompt_targets = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels_all = torch.cat([prompt_targets, labels[:, batch["input_ids"].shape[1]:]], 1)
    ce_all = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels_all[:, 1:],
                                               ignore_index=-100)
    assert abs(ce_all.item() - loss.item()) > 1e-2
    loss.backward()
    assert pol.model.lm_head.weight.grad is not None


def test_sgd_step_moves_logps_in_the_direction_of_the_advantage():
    pol = ChatPolicy.tiny("image", lora=dict(r=4, alpha=8))
    batch = pol.encode_prompts([image(60, 90)], QUESTIONS[:1])
    rollout = pol.generate(batch, 2, max_new_tokens=8, seed=2)
    A = torch.tensor([1.0, -1.0])
    mask = rollout.completion_mask
    params = [p for p in pol.model.parameters() if p.requires_grad]
    before = {id(p): p.detach().clone() for p in pol.model.parameters()}
    logps = pol.completion_logps(rollout)
    (-(A[:, None] * logps * mask).sum()).backward()
    torch.optim.SGD(params, lr=0.05).step()
    after = pol.completion_logps(rollout, with_grad=False)
    change = ((after - logps.detach()) * mask).sum(1)  # (2,) change in log pi(o_i | q)
    assert change[0] > 0 > change[1]
    moved = [p.requires_grad for p in pol.model.parameters() if not torch.equal(p, before[id(p)])]
    assert moved and all(moved)  # only LoRA weights moved


def test_gradient_checkpointing_gives_the_same_logps_and_grads():
    plain = ChatPolicy.tiny("text", lora=dict(r=2, alpha=4))
    ckpt = ChatPolicy.tiny("text", lora=dict(r=2, alpha=4), gradient_checkpointing=True)
    batch = prompt_batch(plain)
    rollout = ckpt.generate(batch, 2, max_new_tokens=6, seed=0)  # eval mode: cache on
    assert torch.equal(rollout.completion_ids, plain.generate(batch, 2, 6, seed=0).completion_ids)
    a, b = plain.completion_logps(rollout), ckpt.completion_logps(rollout)
    torch.testing.assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    ga = [p.grad for p in plain.model.parameters() if p.requires_grad]
    gb = [p.grad for p in ckpt.model.parameters() if p.requires_grad]
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("modality", ["image", "audio"])
def test_from_pretrained_on_saved_tiny_folders(tmp_path, modality):
    pol = ChatPolicy.tiny(modality, seed=4)
    pol.save(tmp_path / "base")
    loaded = ChatPolicy.from_pretrained(str(tmp_path / "base"), modality)
    assert type(loaded.model) is type(pol.model) and loaded.eos_ids == pol.eos_ids
    batch = loaded.encode_prompts(MEDIA[modality](), QUESTIONS)
    assert torch.equal(batch["input_ids"], prompt_batch(pol)["input_ids"])
    rollout = pol.generate(batch, 2, max_new_tokens=6, seed=1)
    assert torch.equal(loaded.generate(batch, 2, 6, seed=1).completion_ids, rollout.completion_ids)
    torch.testing.assert_close(loaded.completion_logps(rollout, with_grad=False),
                               pol.completion_logps(rollout, with_grad=False))

    # LoRA on top of the saved base: the adapter folder alone reloads to the same outputs.
    tuned = ChatPolicy.from_pretrained(str(tmp_path / "base"), modality, lora=dict(r=4, alpha=8))
    randomize_B(tuned.model)
    tuned.save(tmp_path / "adapter")
    again = ChatPolicy.from_pretrained(str(tmp_path / "adapter"), modality)
    assert again.name_or_path == str(tmp_path / "base")
    torch.testing.assert_close(again.completion_logps(rollout, with_grad=False),
                               tuned.completion_logps(rollout, with_grad=False))
    if modality == "image":  # pixel caps are honoured at load time
        capped = ChatPolicy.from_pretrained(str(tmp_path / "base"), modality, max_pixels=56 * 56)
        # 120x90 over 56*56 px: scale by sqrt(120*90/3136), floor to 28 px -> 56x28 -> 4x2 patches
        grid = capped.encode_prompts([image(120, 90)], ["?"])["image_grid_thw"]
        assert grid.tolist() == [[1, 4, 2]]
