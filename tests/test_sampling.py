"""sampling.py against independent references: HF generate's greedy tokens, log-probs recomputed
by full forwards, a chi-square test of the drawn tokens against softmax(z / T) truncated by hand,
the model's own 3-D rope index over whole sequences, and autograd through the unshared rows."""

import numpy as np
import pytest
import torch
from scipy import stats

import distributed
import grpo
import sampling
import train_chat
from chat import ChatPolicy
from test_chat import MEDIA, QUESTIONS, prompt_batch, randomize_B


@pytest.fixture(scope="module", params=["image", "audio", "text"])
def policy(request):
    return ChatPolicy.tiny(request.param)


# ------------------------------------------------------------------ the draw, on a tiny vocabulary
def truncated_softmax(z, T, top_k, top_p):
    """Hand-written reference in numpy: softmax(z / T), keep the k largest, then the smallest
    set of most likely tokens whose mass reaches p, renormalised."""
    p = np.exp(z / T - np.max(z / T))
    p /= p.sum()
    order = np.argsort(-p)
    keep = np.zeros(len(p), bool)
    keep[order[:top_k or len(p)]] = True
    q = np.where(keep, p, 0.0) / p[keep].sum()
    mass = 0.0
    for v in np.argsort(-q):  # add tokens until the mass reaches p
        if mass >= top_p:
            keep[v] = False
        mass += q[v]
    return np.where(keep, q, 0.0) / q[keep].sum()


def test_truncate_hand_worked():
    # probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 (logits = log p)
    p = torch.tensor([[0.0625, 0.5, 0.125, 0.25, 0.0625]])
    z = p.log()

    def kept(**kw):
        return torch.isfinite(sampling.truncate(z, **kw))[0].tolist()

    assert kept(top_k=2) == [False, True, False, True, False]
    assert kept(top_p=0.5) == [False, True, False, False, False]   # 0.5 alone reaches 0.5
    assert kept(top_p=0.6) == [False, True, False, True, False]    # 0.5 < 0.6: add 0.25
    assert kept(top_p=0.8) == [False, True, True, True, False]     # 0.75 < 0.8: add 0.125
    assert kept(top_k=2, top_p=0.9) == [False, True, False, True, False]


@pytest.mark.parametrize("T, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 0.8), (1.3, 5, 1.0),
                                             (0.9, 6, 0.7)])
def test_draw_follows_the_truncated_softmax(T, top_k, top_p):
    """Chi-square goodness of fit: 40 000 draws against the hand-written distribution."""
    z = torch.tensor([1.2, -0.3, 0.5, 2.0, -1.0, 0.0, 0.8, -2.0])
    expected = truncated_softmax(z.numpy().astype(np.float64), T, top_k, top_p)
    rows = 40_000
    g = torch.Generator().manual_seed(0)
    token, logp = sampling.draw(sampling.scaled_logits(z.expand(rows, -1), T), g, top_p, top_k)
    counts = np.bincount(token.numpy(), minlength=len(z))
    support = expected > 0
    assert counts[~support].sum() == 0  # never outside the top-k / top-p set
    chi2 = ((counts[support] - rows * expected[support]) ** 2 / (rows * expected[support])).sum()
    assert stats.chi2.sf(chi2, support.sum() - 1) > 1e-3
    # the log-probs are those of the full softmax(z / T) (departure 1), not the truncated one
    full = torch.log_softmax(z / T, -1)
    torch.testing.assert_close(logp, full[token])
    if support.sum() < len(z):  # the test has power: the untruncated law is rejected
        p = torch.softmax(z.double() / T, -1).numpy()
        assert stats.chisquare(counts, rows * p).pvalue < 1e-6


def test_draw_greedy_and_suppressed_tokens():
    z = torch.tensor([[0.1, 3.0, 0.2, 2.9], [1.0, 0.0, 5.0, 0.0]])
    scaled = sampling.scaled_logits(z, 1.0, suppressed_ids=[2])
    token, _ = sampling.draw(scaled, None, greedy=True)
    assert token.tolist() == [1, 0]  # row 2's arg-max (token 2) is suppressed
    g = torch.Generator().manual_seed(0)
    many, _ = sampling.draw(sampling.scaled_logits(z.repeat(500, 1), 1.0, [2]), g)
    assert (many != 2).all()


# ------------------------------------------------------------------ the decode loop
@pytest.mark.parametrize("padded", [True, False])
def test_greedy_equals_hf_generate(policy, padded):
    """Text, image and audio; a left-padded batch of two prompts of different lengths, and one
    of two prompts of one length (the loop then passes no attention mask)."""
    media, questions = MEDIA[policy.modality](), QUESTIONS
    if not padded:
        media, questions = None if media is None else media[1:] * 2, questions[1:] * 2
    batch = policy.encode_prompts(media, questions)
    assert (batch["attention_mask"] == 0).any() == padded
    ours = policy.generate(batch, 1, max_new_tokens=24, greedy=True)
    hf = policy.generate(batch, 1, max_new_tokens=24, greedy=True, sampler="hf")
    assert torch.equal(ours.completion_ids, hf.completion_ids) and ours.texts == hf.texts
    assert hf.sample_logps is None and ours.sample_logps.shape == ours.completion_ids.shape
    group = policy.generate(batch, 3, max_new_tokens=24, greedy=True)  # the cache repeated N times
    assert torch.equal(group.completion_ids, hf.completion_ids.repeat_interleave(3, 0))


def step_logits(policy, batch, **kw):
    """The logits lm_head produced at each decode step, captured by a hook: (B*N, T, V)."""
    steps = []
    hook = policy.model.lm_head.register_forward_hook(lambda m, i, out: steps.append(out))
    try:
        rollout = policy.generate(batch, **kw)
    finally:
        hook.remove()
    return rollout, torch.stack(steps, 1)


def test_sampler_logps_equal_recomputed_logps(policy):
    """The log-prob each token was drawn with = the scoring pass's, shared and unshared, 1e-5."""
    T, top_k = 0.7, 5
    rollout, logits = step_logits(policy, prompt_batch(policy), num_generations=3,
                                  max_new_tokens=12, temperature=T, top_p=0.9, top_k=top_k,
                                  seed=3)
    m = rollout.completion_mask.bool()
    for shared in (True, False):
        scored = policy.completion_logps(rollout, T, 4, with_grad=False, shared_prefix=shared)
        torch.testing.assert_close(rollout.sample_logps[m], scored[m], atol=1e-5, rtol=0)
    assert (rollout.sample_logps[~m] == 0).all()
    # every sampled token lies in the top-k of its step's logits, placeholders excluded
    z = sampling.scaled_logits(logits, T, policy.suppressed_ids)  # (B*N, T, V)
    rank = (z > z.gather(-1, rollout.completion_ids[..., None])).sum(-1)  # tokens above o_t
    assert (rank[m] < top_k).all()


def test_samples_reproducible_with_a_fixed_generator(policy):
    batch = prompt_batch(policy)
    rng_state = torch.random.get_rng_state()
    a = policy.generate(batch, 3, max_new_tokens=10, temperature=1.2, seed=11)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched
    b = policy.generate(batch, 3, max_new_tokens=10, temperature=1.2, seed=11)
    c = policy.generate(batch, 3, max_new_tokens=10, temperature=1.2, seed=12)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.sample_logps, b.sample_logps)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_mrope_positions_continue_the_models_own_rope_index():
    """New-token positions = what get_rope_index gives for prompt + completion as one sequence."""
    pol = ChatPolicy.tiny("image")
    prompts = prompt_batch(pol)
    positions, first = sampling.prompt_positions(pol.model, prompts)
    T = 5
    ids = torch.cat([prompts["input_ids"], torch.full((2, T), 20)], 1)
    mask = torch.cat([prompts["attention_mask"], torch.ones(2, T, dtype=torch.long)], 1)
    types = torch.cat([prompts["mm_token_type_ids"], torch.zeros(2, T, dtype=torch.long)], 1)
    whole, _ = pol.model.model.get_rope_index(ids, mm_token_type_ids=types, attention_mask=mask,
                                               image_grid_thw=prompts["image_grid_thw"])
    P = prompts["input_ids"].shape[1]
    assert torch.equal(positions, whole[:, :, :P])
    assert torch.equal(sampling.new_positions(first, 0, T, True), whole[:, :, P:])
    # the image tokens' rows and columns differ, so these are 3-D positions, not 1-D ones
    assert not torch.equal(whole[1], whole[2])


# ------------------------------------------------------------------ shared-prefix scoring
def logps_loss_grads(pol, rollout, shared):
    """Log-probs, a GRPO loss (beta > 0, old != new) and its parameter gradients."""
    pol.model.zero_grad(set_to_none=True)
    logps = pol.completion_logps(rollout, 0.8, chunk_size=4, with_grad=True, shared_prefix=shared)
    R = logps.shape[0]
    A = torch.linspace(-1.0, 1.0, R)
    old = logps.detach() + 0.05 * torch.cos(torch.arange(logps.numel()).view_as(logps))
    loss, _ = grpo.grpo_loss(logps, A, rollout.completion_mask, old_logps=old,
                             ref_logps=old - 0.1, beta=0.04)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}
    return logps.detach(), loss.detach(), grads


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_equals_unshared(modality, lora):
    """Log-probs, loss and every parameter gradient, against full prompt + completion rows."""
    pol = ChatPolicy.tiny(modality, lora=dict(r=4, alpha=8) if lora else None)
    randomize_B(pol.model)
    rollout = pol.generate(prompt_batch(pol), 3, max_new_tokens=10, temperature=0.8, seed=4)
    assert rollout.completion_ids.shape[1] > 1
    a_logps, a_loss, a_grads = logps_loss_grads(pol, rollout, shared=True)
    b_logps, b_loss, b_grads = logps_loss_grads(pol, rollout, shared=False)
    torch.testing.assert_close(a_logps, b_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(a_loss, b_loss, atol=1e-5, rtol=0)
    assert a_grads.keys() == b_grads.keys()
    trained = [n for n, p in pol.model.named_parameters() if p.requires_grad]
    assert set(a_grads) == set(trained)  # every trainable weight, adapters or all of them
    assert lora == all("lora_" in n for n in a_grads)
    for n in a_grads:
        torch.testing.assert_close(a_grads[n], b_grads[n], atol=1e-5, rtol=1e-5, msg=n)


def test_shared_prefix_under_gradient_checkpointing():
    """Checkpointed layers re-run in backward with our caches kept (sampling.py, pitfall 2)."""
    plain = ChatPolicy.tiny("text", lora=dict(r=2, alpha=4))
    ckpt = ChatPolicy.tiny("text", lora=dict(r=2, alpha=4), gradient_checkpointing=True)
    for p in (plain, ckpt):
        randomize_B(p.model)
    rollout = plain.generate(prompt_batch(plain), 3, max_new_tokens=8, seed=0)
    calls = []
    for name, m in ckpt.model.named_modules():
        if name.endswith("self_attn"):
            m.register_forward_hook(lambda *a: calls.append(1))
    a_logps, _, a_grads = logps_loss_grads(ckpt, rollout, shared=True)
    forwards = 2 * (1 + 2)  # 2 layers x (the prompt pass + 2 chunks of 4 completion rows)
    assert len(calls) == 2 * forwards  # each layer re-ran in backward: checkpointing was on
    b_logps, _, b_grads = logps_loss_grads(plain, rollout, shared=False)
    torch.testing.assert_close(a_logps, b_logps, atol=1e-5, rtol=0)
    for n in b_grads:
        torch.testing.assert_close(a_grads[n], b_grads[n], atol=1e-5, rtol=1e-5, msg=n)


def test_single_token_completions_come_from_the_prompt_pass(policy):
    batch = prompt_batch(policy)
    rollout = policy.generate(batch, 2, max_new_tokens=1, seed=2)
    assert rollout.completion_ids.shape[1] == 1
    torch.testing.assert_close(policy.completion_logps(rollout, with_grad=False),
                               policy.completion_logps(rollout, with_grad=False,
                                                       shared_prefix=False), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ chat-loop fidelity
def test_ratio_is_exactly_one_at_the_first_update_with_dropout(monkeypatch, tmp_path):
    """LoRA dropout 0.5 and mu = 2: old log-probs (no grad, eval mode) and the first update's
    (grad, train mode) are computed with dropout off, so pi / pi_old = 1 exactly."""
    cfg = train_chat.ChatConfig(device="cpu", num_generations=3, max_new_tokens=8, mu=2,
                                beta=0.04, lora_r=4, lora_dropout=0.5, lr=1e-2)
    pol = train_chat.load_policy(cfg, "tiny", "text", lora=True)
    randomize_B(pol.model)
    examples = [train_chat.ChatExample(None, q, "real") for q in QUESTIONS]
    calls = []

    def recording_loss(logps, advantages, mask, old_logps=None, **kw):
        calls.append((logps.detach().clone(), old_logps.clone()))
        return grpo_loss(logps, advantages, mask, old_logps=old_logps, **kw)

    grpo_loss = grpo.grpo_loss
    monkeypatch.setattr(grpo, "grpo_loss", recording_loss)
    rewards = lambda texts, exs, lengths: (torch.arange(len(texts), dtype=torch.float), {})
    optim = train_chat._setup(pol, cfg, tmp_path, 1, "grpo", distributed.Dist())[:3]
    out = train_chat.grpo_step(pol, examples, rewards, cfg, 0, optim, tmp_path)
    (first, old), (second, _) = calls
    assert torch.equal(first, old)  # ratio exp(0) = 1, token by token
    assert not torch.equal(second, old)  # the first update moved the policy
    drops = [m for m in pol.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.5 for m in drops)  # restored after the step
    # Control: with dropout on, train mode scores another (thinned) policy: the ratio is not 1.
    plain = pol.completion_logps(out["rollout"], with_grad=False)
    thinned = pol.completion_logps(out["rollout"], with_grad=True).detach()
    assert not torch.allclose(thinned, plain, atol=1e-3)


def test_sampling_and_scoring_share_the_bf16_precision():
    """CPU bf16 autocast around both: the first token's log-prob (same prompt pass) is the very
    same number, the others agree to bf16 accuracy; sampled in fp32, even the first is off."""
    pol = ChatPolicy.tiny("text")
    batch = prompt_batch(pol)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = pol.generate(batch, 3, max_new_tokens=12, temperature=0.7, seed=1)
        scored = pol.completion_logps(r, 0.7, with_grad=False)
    m = r.completion_mask.bool()
    assert torch.equal(r.sample_logps[:, 0], scored[:, 0])
    torch.testing.assert_close(r.sample_logps[m], scored[m], atol=1e-2, rtol=0)
    fp32 = pol.generate(batch, 3, max_new_tokens=12, temperature=0.7, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scored32 = pol.completion_logps(fp32, 0.7, with_grad=False)
    assert (fp32.sample_logps[:, 0] - scored32[:, 0]).abs().max() > 1e-4
