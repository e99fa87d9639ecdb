"""train.warmup_lambda against its closed form and against HIR-SDD's scheduler written out by
hand (LinearWarmupCosineLRScheduler of the paper's code, cosine part), and the lr the chat SFT
loop actually logs."""
import json
import math

import pytest
import torch

import train
from chat import ChatPolicy
from train_chat import ChatConfig, ChatExample, sft_stage


def test_warmup_then_cosine_to_the_floor_closed_form():
    f = train.warmup_lambda(2, 10, 0.01)
    assert f(0) == 0.5 and f(1) == 1.0  # (k + 1) / warmup
    # k = 5 of 10: cos(pi / 2) = 0, halfway between 1 and the floor
    assert f(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(2) == pytest.approx(0.01 + 0.99 * (1 + math.cos(0.2 * math.pi)) / 2)
    assert f(10) == pytest.approx(0.01) and f(25) == pytest.approx(0.01)  # stays at the floor
    assert all(f(k) >= f(k + 1) for k in range(1, 12))  # monotone after the warm-up
    g = train.warmup_lambda(3)  # the old behaviour: warm-up, then constant
    assert [g(k) for k in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert train.warmup_lambda(0, 10, 1.0)(7) == 1.0
    with pytest.raises(ValueError, match="floor"):
        train.warmup_lambda(0, 10, 1.5)


def test_decay_equals_the_papers_code_after_warmup():
    # HIR-SDD code: lr = (init - min) * 0.5 * (1 + cos(pi * t / T)) + min for t >= warmup,
    # t counting every step, warm-up included (init 1e-4, min 1e-6, as its SFT configs).
    init, low, T, W = 1e-4, 1e-6, 1000, 100
    f = train.warmup_lambda(W, T, low / init)
    for t in (100, 101, 333, 500, 999):
        code = (init - low) * 0.5 * (1.0 + math.cos(math.pi * t / T)) + low
        assert init * f(t) == pytest.approx(code, rel=1e-12)


def test_the_sft_loop_steps_the_lr_along_the_schedule(tmp_path):
    policy = ChatPolicy.tiny("text", seed=0)
    examples = [ChatExample(None, "Real or fake?", "real", "Final Answer: Real")] * 4
    cfg = ChatConfig(lr=1e-3, warmup_steps=2, lr_floor=0.1, batch_size=2, out_dir=str(tmp_path))
    sft_stage(policy, examples, cfg, tmp_path / "sft", steps=6)
    log = (tmp_path / "sft" / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in log.splitlines()]
    f = train.warmup_lambda(2, 6, 0.1)
    # the row of step k + 1 holds the lr after k + 1 scheduler steps, i.e. the lr of step k + 1
    assert [r["lr"] for r in rows] == pytest.approx(
        [1e-3 * f(k + 1) for k in range(6)], abs=1e-6)  # the log rounds to 6 decimals
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * f(0))  # step 0 trains at f(0)
    opt.step()
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(rows[0]["lr"], abs=1e-6)
