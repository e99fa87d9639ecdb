"""Tests of grpo.py against independent numbers: hand-worked values, a plain-loop version,
autograd vs closed forms, numpy, exact enumeration and Monte Carlo with fixed generators."""

import itertools
import math

import numpy as np
import pytest
import torch

from grpo import (equal_reward_share, group_advantages, grpo_loss, kl_k3, label_logps,
                  sample_labels)

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


# ---------------------------------------------------------------- hand-worked N = 3 case

def test_hand_worked_n3_through_both_clip_branches():
    # rewards [1, 0, 0], eps = 0 (Eq. 2 verbatim): mean 1/3, unbiased std
    # sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3), so A = [2/√3, -1/√3, -1/√3]
    A = group_advantages(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), 3, eps=0.0)
    assert A.tolist() == pytest.approx([1.1547005, -0.5773503, -0.5773503], abs=1e-7)

    # per-token ratios (ε = 0.2), T = 2; o_2 has one token, its padded slot holds -inf
    #   o_1 (A > 0): ρ = 1.5 > 1.2 -> clipped: min(1.5A, 1.2A) = 1.2A = 1.385641 (no gradient)
    #                ρ = 0.5       -> min(0.5A, 0.8A) = 0.5A = 0.577350 (unclipped, gradient flows)
    #   o_2 (A < 0): ρ = 0.5 < 0.8 -> min(0.5A, 0.8A) = 0.8A = -0.461880 (clipped, no gradient)
    #   o_3 (A < 0): ρ = 1.0       -> A = -0.577350
    #                ρ = 1.5       -> min(1.5A, 1.2A) = 1.5A = -0.866025 (unclipped: pessimistic)
    # per-sequence means: 0.981495, -0.461880, -0.721688; J = mean = -0.0673576; loss = -J
    r = torch.tensor([[1.5, 0.5], [0.5, 1.0], [1.0, 1.5]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -2.0], [-0.5, -math.inf], [-3.0, -0.7]], dtype=torch.float64)
    logps = (old + r.log()).requires_grad_()
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    loss, stats = grpo_loss(logps, A, mask, old_logps=old, beta=0.0, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.0673576, abs=1e-6)

    # d loss / d logp = -(1/3)(1/|o_i|) ρ A on unclipped tokens, 0 on clipped and padded ones:
    #   o_1,2: -(1/6)(0.5)(1.154701) = -0.0962250;  o_3,1: -(1/6)(1.0)(-0.577350) = 0.0962250
    #   o_3,2: -(1/6)(1.5)(-0.577350) = 0.1443376
    (grad,) = torch.autograd.grad(loss, logps)
    expected = [[0.0, -0.0962250], [0.0, 0.0], [0.0962250, 0.1443376]]
    assert grad.tolist() == [pytest.approx(row, abs=1e-7) for row in expected]

    # 1 of 5 real tokens clipped high (o_1,1), 1 clipped low (o_2,1); mean ρ = 5/5; |o| = 5/3
    assert stats["clip_high"].item() == pytest.approx(0.2)
    assert stats["clip_low"].item() == pytest.approx(0.2)
    assert stats["clip_frac"].item() == pytest.approx(0.4)
    assert stats["ratio"].item() == pytest.approx(1.0)
    assert stats["completion_length"].item() == pytest.approx(5 / 3)
    assert stats["kl"].item() == 0.0


def test_clip_eps_high_widens_only_the_upper_side():
    # ρ = 1.25, A = 1: clipped at ε_high = 0.2 (gradient 0) but not at ε_high = 0.28 (DAPO)
    logps = torch.tensor([[math.log(1.25)]], requires_grad=True)
    old, mask, A = torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1)
    for eps_high, grad_expected in ((None, 0.0), (0.28, -1.25)):
        loss, _ = grpo_loss(logps, A, mask, old_logps=old, beta=0.0, clip_eps_high=eps_high)
        (g,) = torch.autograd.grad(loss, logps)
        assert g.item() == pytest.approx(grad_expected)


# ---------------------------------------------------------------- gradient at ratio 1

def _random_batch(gen, BN=6, T=5, empty_row=None):
    logps = -torch.rand(BN, T, generator=gen, dtype=torch.float64) * 3
    ref = -torch.rand(BN, T, generator=gen, dtype=torch.float64) * 3
    lengths = torch.randint(1, T + 1, (BN,), generator=gen)
    if empty_row is not None:
        lengths[empty_row] = 0
    mask = torch.arange(T)[None, :] < lengths[:, None]  # from lengths, never from pad ids
    A = torch.randn(BN, generator=gen, dtype=torch.float64)
    return logps, ref, mask, A


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_at_ratio_one_is_closed_form(loss_type):
    # old = None: ρ = 1, so d ℓ_it / d logp = -A_i + β (1 - exp(ref - logp)) (the k3 part),
    # times the aggregation weight of the token
    gen = torch.Generator().manual_seed(0)
    logps, ref, mask, A = _random_batch(gen)
    beta = 0.04
    logps.requires_grad_()
    loss, stats = grpo_loss(logps, A, mask, ref_logps=ref, beta=beta, loss_type=loss_type)
    (grad,) = torch.autograd.grad(loss, logps)

    BN, T = logps.shape
    lengths = mask.sum(1, keepdim=True).double()
    weight = {"grpo": 1 / (BN * lengths), "bnpo": 1 / lengths.sum(), "dr_grpo": 1 / (BN * T),
              "dapo": 1 / lengths.sum(), "reinforce": 1 / BN}[loss_type]
    closed = (-A[:, None] + beta * (1 - torch.exp(ref - logps.detach()))) * weight * mask
    torch.testing.assert_close(grad, closed)
    assert stats["ratio"].item() == pytest.approx(1.0) and stats["clip_frac"].item() == 0.0


def test_loss_value_without_old_policy_is_minus_mean_advantage():
    # ρ = 1 in value: "grpo" loss = -mean_i A_i; centred advantages make it ~0 in value
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    A = group_advantages(rewards, 4)
    logps = torch.full((8, 3), -1.0, requires_grad=True)
    loss, _ = grpo_loss(logps, A, torch.ones(8, 3), beta=0.0)
    assert abs(loss.item()) < 1e-6
    (grad,) = torch.autograd.grad(loss, logps)
    assert grad.abs().max().item() > 0.01  # yet the gradient is -A ∇logπ / (N |o_i|)


# ---------------------------------------------------------------- k3

def test_k3_zero_at_equality_and_nonnegative():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1000, generator=gen) * 5
    assert torch.equal(kl_k3(x, x), torch.zeros_like(x))
    y = torch.randn(1000, generator=gen) * 5
    assert (kl_k3(x, y) >= 0).all()
    # tiny differences: expm1 keeps them positive and accurate (d²/2), no cancellation to < 0
    d = torch.tensor([1e-4, -1e-4], dtype=torch.float64)
    torch.testing.assert_close(kl_k3(torch.zeros(2, dtype=torch.float64), d), d**2 / 2 + d**3 / 6)
    # by hand: d = ln 2 -> 2 - ln 2 - 1 = 0.3068528
    assert kl_k3(torch.tensor(0.0), torch.tensor(math.log(2))).item() == pytest.approx(0.3068528)


def test_k3_monte_carlo_mean_estimates_exact_kl():
    pi = torch.softmax(torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0], dtype=torch.float64), 0)
    ref = torch.softmax(torch.tensor([0.0, 0.5, 0.5, 1.0, -1.0], dtype=torch.float64), 0)
    kl_exact = (pi * (pi.log() - ref.log())).sum().item()  # Σ π log(π/π_ref)
    gen = torch.Generator().manual_seed(2)
    x = torch.multinomial(pi, 200_000, replacement=True, generator=gen)  # samples from π_θ
    k3 = kl_k3(pi.log()[x], ref.log()[x])
    se = k3.std().item() / math.sqrt(x.numel())
    assert abs(k3.mean().item() - kl_exact) < 5 * se


# ---------------------------------------------------------------- loss vs a plain loop

def _loop_loss(logps, A, mask, old, ref, eps_low, eps_high, beta, loss_type, L_max, n_items):
    """The same objective, token by token, in plain Python floats."""
    BN, T = len(logps), len(logps[0])
    seq_terms, seq_sums, total, tokens = [], [], 0.0, 0
    for i in range(BN):
        s, n = 0.0, 0
        for t in range(T):
            if not mask[i][t]:
                continue
            if loss_type == "reinforce":  # no ratio, no clip: A log π
                obj = A[i] * logps[i][t]
            else:
                rho = math.exp(logps[i][t] - old[i][t])
                obj = min(rho * A[i], min(max(rho, 1 - eps_low), 1 + eps_high) * A[i])
            d = ref[i][t] - logps[i][t]
            s += -obj + beta * (math.exp(d) - d - 1)
            n += 1
        seq_terms.append(s / n if n else 0.0)
        seq_sums.append(s)
        total, tokens = total + s, tokens + n
    if loss_type == "grpo":
        return sum(seq_terms) / BN
    if loss_type == "reinforce":
        return sum(seq_sums) / BN
    if loss_type == "bnpo":
        return total / tokens
    if loss_type == "dr_grpo":
        return total / (BN * (T if L_max is None else L_max))
    return total / (tokens if n_items is None else n_items)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("extra", [{}, {"max_completion_length": 9, "num_items_in_batch": 37}])
def test_vectorised_loss_equals_loop(loss_type, extra):
    gen = torch.Generator().manual_seed(3)
    logps, ref, mask, A = _random_batch(gen, BN=8, T=6, empty_row=2)
    # old policy 0.4 nats away on average: both clips fire on some tokens
    old = logps + 0.4 * torch.randn(logps.shape, generator=gen, dtype=torch.float64)
    kw = dict(clip_eps=0.2, clip_eps_high=0.28, beta=0.05, loss_type=loss_type)
    reinforce = loss_type == "reinforce"  # no ratio: it takes no old policy
    loss, stats = grpo_loss(logps, A, mask, old_logps=None if reinforce else old, ref_logps=ref,
                            **kw, **extra)
    expected = _loop_loss(logps.tolist(), A.tolist(), mask.tolist(), old.tolist(), ref.tolist(),
                          0.2, 0.28, 0.05, loss_type, extra.get("max_completion_length"),
                          extra.get("num_items_in_batch"))
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    if not reinforce:
        assert 0 < stats["clip_low"].item() and 0 < stats["clip_high"].item()
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())


def test_padding_garbage_does_not_leak_into_loss_or_gradient():
    gen = torch.Generator().manual_seed(4)
    logps, ref, mask, A = _random_batch(gen, empty_row=0)
    # padded slots filled with NaN (logps, old, ref) must give the same loss and gradient
    nan = torch.tensor(math.nan, dtype=torch.float64)
    dirty_ref = torch.where(mask, ref, nan)
    results = []
    for x, r in ((logps, ref), (torch.where(mask, logps, nan), dirty_ref)):
        x = x.clone().requires_grad_()
        loss, _ = grpo_loss(x, A, mask, old_logps=x.detach() - 0.1, ref_logps=r)
        (g,) = torch.autograd.grad(loss, x)
        results.append((loss, g))
    torch.testing.assert_close(results[0], results[1])
    assert torch.isfinite(results[1][1]).all()


# ---------------------------------------------------------------- advantages

def test_advantages_match_numpy():
    rng = np.random.default_rng(5)
    r = rng.normal(size=(5, 4))
    t = torch.tensor(r.reshape(-1))
    centred = r - r.mean(axis=1, keepdims=True)
    expected = {"group": centred / (r.std(axis=1, ddof=1, keepdims=True) + 1e-4),
                "batch": (r - r.mean()) / (r.std(ddof=1) + 1e-4), "none": centred, "raw": r}
    for scale, exp in expected.items():
        got = group_advantages(t, 4, scale).numpy()
        np.testing.assert_allclose(got, exp.reshape(-1), rtol=1e-12)


@pytest.mark.parametrize("scale", ["group", "none"])
def test_all_equal_groups_give_exactly_zero(scale):
    # three float32 0.9s: their float mean is 0.9 - 6e-8, yet the advantages must be exactly 0
    r = torch.tensor([0.9, 0.9, 0.9, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    for eps in (1e-4, 0.0):
        A = group_advantages(r, 3, scale, eps=eps)
        assert torch.isfinite(A).all()
        assert A[:6].tolist() == [0.0] * 6
        assert (A[6:] != 0).all()
    # N = 1: every group is a single, trivially all-equal reward
    assert group_advantages(torch.tensor([0.3, 2.0]), 1, scale).tolist() == [0.0, 0.0]
    assert group_advantages(torch.tensor([5.0]), 1, scale).tolist() == [0.0]


def test_batch_scale_is_antideepfakes_reward_norm():
    # AntiDeepfake algo/rl.py, written out: reward (B*M,) flattened over utterances x draws,
    # reward_norm = (reward - reward.mean()) / (reward.std() + std_floor), std_floor = 1e-5
    r = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    by_hand = (r - r.mean()) / (r.std() + 1e-5)
    A = group_advantages(r, 4, "batch", eps=1e-5)
    torch.testing.assert_close(A, by_hand)
    # the all-correct first group is pushed up: it beats the batch mean
    assert (A[:4] > 0).all() and A[0].item() == pytest.approx(float(by_hand[0]))
    # only a wholly equal batch gives exactly 0 (float residue of the mean removed)
    assert group_advantages(torch.full((6,), 0.9), 3, "batch").tolist() == [0.0] * 6
    # groups of one are fine: the batch is the comparison
    torch.testing.assert_close(group_advantages(torch.tensor([0.0, 1.0]), 1, "batch", eps=0.0),
                               torch.tensor([-0.70710678, 0.70710678]))


def test_bad_inputs_raise_clear_errors():
    r = torch.ones(6)
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(r, 4)
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(r, 0)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(r, 3, scale="std")
    with pytest.raises(ValueError, match="1-D"):
        equal_reward_share(torch.ones(2, 3), 3)
    lp, m = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(lp, torch.zeros(2), m, beta=0.04)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(lp, torch.zeros(2), m, beta=0.0, loss_type="ppo")
    with pytest.raises(ValueError, match="completion_mask"):
        grpo_loss(lp, torch.zeros(2), torch.ones(2, 2), beta=0.0)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(lp, torch.zeros(3), m, beta=0.0)
    with pytest.raises(ValueError, match="labels"):
        label_logps(torch.zeros(2, 2), torch.tensor([0, 1, 2, 0]), 2)


# ---------------------------------------------------------------- Bernoulli policy oracles

@pytest.mark.parametrize("p,N", [(0.3, 4), (0.8, 8)])
def test_equal_reward_share_matches_p_to_the_N(p, N):
    gen = torch.Generator().manual_seed(6)
    G = 20_000
    rewards = (torch.rand(G * N, generator=gen) < p).float()  # 1 = correct, accuracy p
    share = equal_reward_share(rewards, N).item()
    exact = p**N + (1 - p) ** N
    assert abs(share - exact) < 5 * math.sqrt(exact * (1 - exact) / G)


@pytest.mark.parametrize("p,N", [(0.3, 4), (0.8, 5)])
def test_dr_grpo_expected_gradient_is_scaled_true_gradient(p, N):
    # policy: logits [0, θ], label 1 is correct, P(correct) = p = sigmoid(θ); reward = 1{correct}.
    # true gradient d/dθ E[r] = d p/dθ = p (1 - p). Enumerate all 2^N outcomes exactly.
    theta0 = math.log(p / (1 - p))
    expected = {"none": 0.0, "raw": 0.0}
    for outcome in itertools.product([0, 1], repeat=N):
        labels = torch.tensor(outcome)
        prob = p ** sum(outcome) * (1 - p) ** (N - sum(outcome))
        for scale in expected:
            theta = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
            logits = torch.stack([torch.zeros_like(theta), theta], dim=1)  # (1, 2)
            logps = label_logps(logits, labels, N)  # (N, 1)
            A = group_advantages(labels.double(), N, scale)
            loss, _ = grpo_loss(logps, A, torch.ones_like(logps), beta=0.0)
            (g,) = torch.autograd.grad(-loss, theta)  # ascent direction on J
            expected[scale] += prob * g.item()
    true_grad = p * (1 - p)
    assert expected["none"] == pytest.approx((N - 1) / N * true_grad, rel=1e-10)
    assert expected["raw"] == pytest.approx(true_grad, rel=1e-10)  # no baseline: unbiased


# ---------------------------------------------------------------- classifier route helpers

def test_sample_labels_frequencies_match_softmax_and_layout():
    logits = torch.tensor([[2.0, 0.0, -1.0], [-1.0, 0.5, 0.5]])
    N = 30_000
    labels = sample_labels(logits, N, generator=torch.Generator().manual_seed(7))
    assert labels.dtype == torch.long and labels.shape == (2 * N,)
    probs = torch.softmax(logits, -1)
    for b in range(2):  # rows b*N .. b*N+N-1 are the draws of input b
        freq = torch.bincount(labels[b * N:(b + 1) * N], minlength=3).double() / N
        se = (probs[b] * (1 - probs[b]) / N).sqrt()
        assert ((freq - probs[b]).abs() < 5 * se).all()
    again = sample_labels(logits, N, generator=torch.Generator().manual_seed(7))
    assert torch.equal(labels, again)


def test_label_logps_values_and_gradient():
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 3, 1, 2, 0])  # N = 2
    out = label_logps(logits, labels, 2)
    assert out.shape == (6, 1)
    # loop reference: log(exp(z_c) / Σ exp(z))
    ref = torch.stack([logits[j // 2, labels[j]] - torch.logsumexp(logits[j // 2], 0)
                       for j in range(6)])[:, None]
    torch.testing.assert_close(out, ref)
    w = torch.randn(6, 1, generator=gen, dtype=torch.float64)
    g1, = torch.autograd.grad((out * w).sum(), logits)
    g2, = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g1, g2)
    # bf16 logits (autocast) give fp32 log-probs
    assert label_logps(logits.detach().bfloat16(), labels, 2).dtype == torch.float32


# ---------------------------------------------------------------- gradient accumulation

def test_dapo_matches_full_batch_under_accumulation_and_bnpo_does_not():
    gen = torch.Generator().manual_seed(9)
    logps, ref, _, A = _random_batch(gen, BN=4, T=4)
    # lengths 1, 1 | 4, 4: micro-batches of 2 and 8 tokens
    mask = torch.arange(4)[None, :] < torch.tensor([1, 1, 4, 4])[:, None]
    kw = dict(ref_logps=ref, beta=0.04)

    def grad_of(fn):
        x = logps.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(x), x)
        return g

    full = grad_of(lambda x: grpo_loss(x, A, mask, loss_type="bnpo", **kw)[0])
    halves = (slice(0, 2), slice(2, 4))
    # the trainer averages the k = 2 micro-batch losses for bnpo, sums them for dapo
    bnpo_acc = grad_of(lambda x: sum(grpo_loss(x[s], A[s], mask[s], loss_type="bnpo",
                                               ref_logps=ref[s], beta=0.04)[0] for s in halves) / 2)
    n_items = int(mask.sum())
    dapo_acc = grad_of(lambda x: sum(grpo_loss(x[s], A[s], mask[s], loss_type="dapo",
                                               ref_logps=ref[s], beta=0.04,
                                               num_items_in_batch=n_items)[0] for s in halves))
    torch.testing.assert_close(dapo_acc, full)
    assert not torch.allclose(bnpo_acc, full)
    # token weights: bnpo-accumulated 1/(2*2) and 1/(2*8) vs 1/10 for every token
    assert (bnpo_acc[:2, 0] / full[:2, 0]).tolist() == pytest.approx([2.5, 2.5])
    assert (bnpo_acc[2:] / full[2:]).flatten().tolist() == pytest.approx([0.625] * 8)


def test_reinforce_is_the_papers_code_written_out():
    # HIR-SDD's GRPO code: loss = -mean_i(A_i * sum_t log pi_it), no ratio, no clip
    gen = torch.Generator().manual_seed(11)
    logps, ref, mask, A = _random_batch(gen, BN=6, T=5)
    loss, _ = grpo_loss(logps, A, mask, beta=0.0, loss_type="reinforce")
    by_hand = -(A * (logps * mask).sum(1)).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-12)
    # AntiDeepfake's grpo3_degraded (T = 1, raw 1/0 rewards r): loss = -mean(logp * r - beta * kl)
    # with kl = exp(ref - logp) - (ref - logp) - 1 per draw
    logp = -torch.rand(8, 1, generator=gen, dtype=torch.float64)
    ref1 = -torch.rand(8, 1, generator=gen, dtype=torch.float64)
    r = torch.tensor([1.0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.float64)
    loss, _ = grpo_loss(logp, r, torch.ones_like(logp), ref_logps=ref1, beta=0.04,
                        loss_type="reinforce")
    kl = torch.exp(ref1 - logp) - (ref1 - logp) - 1
    by_hand = -(logp[:, 0] * r - 0.04 * kl[:, 0]).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-12)
    with pytest.raises(ValueError, match="no ratio"):
        grpo_loss(logp, r, torch.ones_like(logp), old_logps=logp, beta=0.0, loss_type="reinforce")
