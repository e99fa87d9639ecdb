"""Every claim of EXERCISES.md, recomputed. A number quoted there is recomputed here with grpo.py
(or a closed form) and must appear in the text with the digits given, so the exercises and the
code cannot drift apart."""

import math
import re
import sys
from pathlib import Path

import pytest
import torch

from grpo import equal_reward_share, group_advantages, grpo_loss, kl_k3, label_logps

TEXT = (Path(__file__).resolve().parents[1] / "EXERCISES.md").read_text(encoding="utf-8")


def quoted(value, digits=4):
    """Assert that `value`, rounded to `digits` decimals, is written in EXERCISES.md."""
    s = f"{value:.{digits}f}"
    assert s in TEXT, f"EXERCISES.md should quote {s}"


def toy_theta_grad(labels, scale, p, loss_type="grpo", eps=1e-4):
    """dJ/dθ (= -dL/dθ) for one group of draws of the toy policy logits [0, θ], p = sigmoid(θ);
    label 1 is the correct one (reward 1)."""
    theta = torch.tensor([math.log(p / (1 - p))], dtype=torch.float64, requires_grad=True)
    logits = torch.stack([torch.zeros_like(theta), theta], dim=1)  # (1, 2)
    labels = torch.tensor(labels)
    logps = label_logps(logits, labels, len(labels))  # (N, 1)
    A = group_advantages(labels.double(), len(labels), scale, eps=eps)
    loss, _ = grpo_loss(logps, A, torch.ones_like(logps), beta=0.0, loss_type=loss_type)
    (g,) = torch.autograd.grad(-loss, theta)
    return g.item(), loss.item()


def binomial_moments(p, N, scale):
    """Mean and std of the per-group gradient estimate over all group compositions: the estimate
    depends only on k, the number of correct draws, which is Binomial(N, p)."""
    m1 = m2 = 0.0
    for k in range(N + 1):
        w = math.comb(N, k) * p**k * (1 - p) ** (N - k)
        g, _ = toy_theta_grad([1] * k + [0] * (N - k), scale, p)
        m1, m2 = m1 + w * g, m2 + w * g * g
    return m1, math.sqrt(m2 - m1 * m1)


def test_every_exercise_is_complete_and_names_its_test():
    sections = TEXT.split("\n## ")[1:]
    assert len(sections) >= 6
    named = []
    for sec in sections:
        for part in ("**Question.**", "**Hint.**", "<details><summary>Worked answer</summary>"):
            assert part in sec, f"exercise '{sec.splitlines()[0]}' lacks {part}"
        names = re.findall(r"\*\*Checked by:\*\* `tests/test_exercises.py::(\w+)`", sec)
        assert len(names) == 1, sec.splitlines()[0]
        named += names
    here = {n for n in dir(sys.modules[__name__]) if n.startswith("test_ex")}
    assert set(named) == here and len(named) == len(here)


def test_ex1_loss_zero_gradient_not():
    A = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    quoted(A[0].item())
    quoted(-A[1].item())
    g, loss = toy_theta_grad([1, 0, 0, 0], "group", 0.5)
    assert abs(loss) < 1e-6
    assert -g == pytest.approx(-0.374925, abs=1e-6)
    quoted(-g, 6)
    assert -toy_theta_grad([1, 0, 0, 0], "group", 0.5, eps=0.0)[0] == pytest.approx(-0.375)
    # bnpo: lengths 3 and 1, rewards [1, 0] -> minus the length-weighted mean advantage
    A2 = group_advantages(torch.tensor([1.0, 0.0]), 2)
    quoted(A2[0].item())
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, _ = grpo_loss(torch.full((2, 3), -0.7), A2, mask, beta=0.0, loss_type="bnpo")
    assert loss.item() == pytest.approx(-(3 * A2[0] + A2[1]).item() / 4)
    quoted(loss.item())


def test_ex2_dead_groups():
    for p, N in ((0.9, 8), (0.9, 6), (0.5, 8), (0.99, 64)):
        quoted(p**N + (1 - p) ** N)
    # Monte Carlo with the logged diagnostic
    gen = torch.Generator().manual_seed(0)
    rewards = (torch.rand(20_000 * 8, generator=gen) < 0.9).float()
    assert equal_reward_share(rewards, 8).item() == pytest.approx(0.4305, abs=0.02)
    N_min = next(N for N in range(1, 100) if 0.9**N + 0.1**N < 0.1)
    assert N_min == 22 and "N ≥ 22" in TEXT
    quoted(0.9**21)
    quoted(0.9**22)


def test_ex3_eps_and_equal_groups():
    # (a) Eq. 2 verbatim is 0/0; the library gives exactly 0
    r = torch.ones(4)
    assert torch.isnan((r - r.mean()) / r.std()).all()
    assert group_advantages(r, 4).tolist() == [0.0] * 4
    # (b) float32 rounding of the mean
    r = torch.tensor([0.9, 0.9, 0.9])
    naive = (r - r.mean()) / r.std()
    assert naive.tolist() == pytest.approx([math.sqrt(2 / 3)] * 3, rel=1e-5)
    quoted(naive[0].item())
    quoted(((r - r.mean()) / (r.std() + 1e-4))[0].item())  # with eps
    assert group_advantages(r, 3).tolist() == [0.0] * 3
    # (c) eps as a floor on tiny reward differences
    r = torch.tensor([1.0, 1.0, 1.0, 1.0 + 1e-6], dtype=torch.float64)
    assert group_advantages(r, 4, eps=0.0)[-1].item() == pytest.approx(1.5, rel=1e-6)
    quoted(group_advantages(r, 4)[-1].item(), 7)
    # (d) one success among N = 8: (N-1)/√N and -1/√N
    r = torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64)
    A0 = group_advantages(r, 8, eps=0.0)
    assert A0[0].item() == pytest.approx(7 / math.sqrt(8))
    assert A0[1].item() == pytest.approx(-1 / math.sqrt(8))
    quoted(A0[0].item())
    quoted(group_advantages(r, 8)[0].item())  # with eps
    quoted(-A0[1].item())


@pytest.mark.parametrize("A,rho,grad,clipped", [(1.0, 1.5, 0.0, "clip_high"),
                                                 (1.0, 0.5, -0.5, None),
                                                 (-1.0, 0.5, 0.0, "clip_low"),
                                                 (-1.0, 1.5, 1.5, None)])
def test_ex4_clip_branches(A, rho, grad, clipped):
    logps = torch.tensor([[math.log(rho)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, stats = grpo_loss(logps, torch.tensor([A], dtype=torch.float64), torch.ones(1, 1),
                            old_logps=old, beta=0.0, clip_eps=0.2)
    (g,) = torch.autograd.grad(loss, logps)
    assert g.item() == pytest.approx(grad)
    for key in ("clip_low", "clip_high"):
        assert stats[key].item() == (1.0 if key == clipped else 0.0)
    # one update per rollout: the ratio is 1 in value, the clip never fires
    wild = torch.randn(16, 5, generator=torch.Generator().manual_seed(1)) * 10
    _, stats = grpo_loss(wild, torch.randn(16), torch.ones(16, 5), beta=0.0)
    assert stats["clip_frac"].item() == 0.0


def test_ex5_k3_vs_k1():
    def moments(pi, ref):
        k1, k3 = pi.log() - ref.log(), kl_k3(pi.log(), ref.log())
        kl = (pi * k1).sum().item()  # exact KL(π‖π_ref)
        stats = []
        for k in (k1, k3):
            mean = (pi * k).sum().item()
            assert mean == pytest.approx(kl, rel=1e-12)  # both unbiased
            stats.append(math.sqrt((pi * (k - mean) ** 2).sum().item()))
        return kl, k1, k3, stats

    pi = torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), 0)
    kl, k1, k3, (s1, s3) = moments(pi, torch.full((3,), 1 / 3, dtype=torch.float64))
    for v in [kl, s1, s3, *k3.tolist()] + [abs(x) for x in k1.tolist()]:
        quoted(v)
    assert (k1 < 0).sum().item() == 2 and (k3 >= 0).all() and s3 < s1
    kl, k1, k3, (s1, s3) = moments(torch.tensor([0.99, 0.01], dtype=torch.float64),
                                   torch.tensor([0.01, 0.99], dtype=torch.float64))
    for v in (kl, s1, s3):
        quoted(v)
    quoted(k3[1].item(), 2)
    assert s3 > s1


@pytest.mark.parametrize("loss_type,short,long", [("grpo", 0.25, 0.0625), ("bnpo", 0.1, 0.1),
                                                  ("dr_grpo", 0.0625, 0.0625), ("dapo", 0.1, 0.1)])
def test_ex6_token_weights(loss_type, short, long):
    mask = torch.arange(8)[None, :] < torch.tensor([2, 8])[:, None]  # (2, 8)
    logps = torch.full((2, 8), -1.0, dtype=torch.float64, requires_grad=True)
    loss, _ = grpo_loss(logps, -torch.ones(2, dtype=torch.float64), mask, beta=0.0,
                        loss_type=loss_type, max_completion_length=8)
    (g,) = torch.autograd.grad(loss, logps)
    assert g[0, :2].tolist() == pytest.approx([short] * 2)
    assert g[1].tolist() == pytest.approx([long] * 8)
    assert g[0, 2:].abs().sum().item() == 0.0  # padding gets nothing
    assert f"| {loss_type} " in TEXT and f"| {short} | {long} |" in TEXT


def test_ex7_dapo_vs_bnpo_accumulation():
    # lengths 1, 1 | 4, 4: micro-batches of 2 and 8 tokens
    mask = torch.arange(4)[None, :] < torch.tensor([1, 1, 4, 4])[:, None]
    A = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)
    halves = (slice(0, 2), slice(2, 4))

    def grad(fn):
        x = torch.full((4, 4), -1.0, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(x), x)
        return g

    full = grad(lambda x: grpo_loss(x, A, mask, beta=0.0, loss_type="bnpo")[0])
    bnpo = grad(lambda x: sum(grpo_loss(x[s], A[s], mask[s], beta=0.0, loss_type="bnpo")[0]
                              for s in halves) / 2)
    dapo = grad(lambda x: sum(grpo_loss(x[s], A[s], mask[s], beta=0.0, loss_type="dapo",
                                        num_items_in_batch=10)[0] for s in halves))
    torch.testing.assert_close(dapo, full)
    assert (bnpo[:2, 0] / full[:2, 0]).tolist() == pytest.approx([2.5, 2.5])
    assert (bnpo[2:] / full[2:]).flatten().tolist() == pytest.approx([0.625] * 8)
    assert "2.5×" in TEXT and "0.625×" in TEXT


def test_ex8_raw_rewards():
    p, N = 0.9, 8
    # wrong draws get no gradient on their log-probs
    logps = torch.full((4, 1), -0.5, requires_grad=True)
    A = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), 4, "raw")
    (g,) = torch.autograd.grad(grpo_loss(logps, A, torch.ones(4, 1), beta=0.0)[0], logps)
    assert g[1].item() == 0.0 and g[3].item() == 0.0 and g[0].item() < 0
    # an all-correct group: 1 - p under raw rewards, 0 under normalised GRPO
    assert toy_theta_grad([1] * N, "raw", p)[0] == pytest.approx(1 - p)
    assert f"dJ/dθ = 1 - p = {1 - p:.1f}" in TEXT
    assert toy_theta_grad([1] * N, "group", p)[0] == 0.0
    assert toy_theta_grad([0] * N, "raw", p)[0] == 0.0
    mean_raw, std_raw = binomial_moments(p, N, "raw")
    assert mean_raw == pytest.approx(p * (1 - p))
    assert f"p(1 - p) = {mean_raw:.2f}" in TEXT
    share = p**N * toy_theta_grad([1] * N, "raw", p)[0] / mean_raw
    assert share == pytest.approx(p ** (N - 1))
    quoted(share)
    _, std_none = binomial_moments(p, N, "none")
    quoted(std_raw)
    quoted(std_none)


def test_ex9_dr_grpo_bias():
    N = 8
    mean_none, _ = binomial_moments(0.7, N, "none")
    assert mean_none == pytest.approx((N - 1) / N * 0.7 * 0.3)
    quoted(mean_none, 5)
    assert f"true gradient {0.7 * 0.3:.2f}, centred {mean_none:.5f}" in TEXT
    ratios = []
    for p in (0.5, 0.7, 0.9):
        mean_group, _ = binomial_moments(p, N, "group")
        quoted(mean_group)
        quoted(mean_group / (p * (1 - p)))
        ratios.append(mean_group / (p * (1 - p)))
    assert ratios[0] < ratios[1] < ratios[2]  # not a fixed multiple: depends on p
