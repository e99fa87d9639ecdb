"""bench.py: `--quick` writes the JSON the README and the issue name (shape, not speed), its
parameter-memory claim matches closed-form counts, and its byte counters match hand counts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench_chat
import measure
from tiny import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # a subprocess: bench sets torch's thread count, which must not leak into other tests
    subprocess.run([sys.executable, "bench.py", "--quick", "--json", str(out)], cwd=ROOT,
                   check=True, timeout=300, capture_output=True)
    return json.loads(out.read_text())


def is_stats(s):
    return set(s) == {"median", "min", "max", "n"} and 0 < s["min"] <= s["median"] <= s["max"]


def test_quick_json_has_the_issue_keys(quick):
    c, h = quick["classifier"], quick["chat"]
    for key in ("grpo_over_sft_beta0", "grpo_over_sft_beta", "grpo_over_sft_old"):
        assert is_stats(c[key]["tiny"]) and c[key]["tiny"]["n"] == 3
    assert set(h["phase_seconds"]) == {"text", "text_lora", "image", "image_lora"}
    for run, phases in h["phase_seconds"].items():
        assert set(phases) == set(bench_chat.PHASES) | {"total"}
        assert all(is_stats(s) for s in phases.values())
        assert 0 < h["generate_share"][run] < 1
        assert h["runs"][run]["memory_bytes"]["activations"] > 0
    for part, (fast, slow) in (("sampling", ("loop", "hf")), ("scoring", ("shared", "unshared"))):
        assert set(h[part]) == set(bench_chat.WORKLOADS)
        assert all(is_stats(r[k]) for r in h[part].values() for k in (fast, slow, "speedup"))
    assert set(h["trl"]) == {"short", "256"}
    for length, t in h["trl"].items():
        if h["ours_over_trl"][length] is None:  # the project's test environment has no trl
            assert "trl is not installed" in t["skipped"]
        else:
            assert is_stats(h["ours_over_trl"][length])


def test_lora_run_holds_base_plus_adapters_and_no_reference(quick):
    runs = quick["chat"]["runs"]
    # tiny Qwen2 (tiny.py): hidden 64, 2 layers, MLP 128, 4 query heads and 2 KV heads of 16
    H, F, KV, layers, V = 64, 128, 32, 2, len(tiny_tokenizer())
    per_layer = (H * H + H) + 2 * (H * KV + KV) + H * H + 3 * H * F + 2 * H  # q,k,v (bias), o, MLP, norms
    base = 4 * (layers * per_layer + 2 * V * H + H)  # fp32; embedding and lm_head untied
    # LoRA r = 8 on q, k, v, o, gate, up, down: r * (in + out) each
    adapters = 4 * layers * 8 * ((H + H) + 2 * (H + KV) + (H + H) + 2 * (H + F) + (F + H))
    text, text_lora = runs["text"]["parameter_memory"], runs["text_lora"]["parameter_memory"]
    assert text["base"] == text_lora["base"] == base
    assert text_lora["adapters"] == runs["image_lora"]["parameter_memory"]["adapters"] == adapters
    assert text_lora["held_by_run"] == base + adapters         # the reference costs nothing
    assert text["held_by_run"] == 2 * base                      # full: policy + frozen copy
    image, image_lora = runs["image"]["parameter_memory"], runs["image_lora"]["parameter_memory"]
    assert image["held_by_run"] == 2 * image["base"]
    assert image_lora["held_by_run"] == image_lora["base"] + adapters


def test_saved_activations_counts_each_storage_once_and_skips_parameters():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with measure.saved_activations(lin) as act:
        h = lin(x)               # addmm saves x (2*4 floats); the weight is a parameter
        (h * h).sum()            # mul saves h twice: one storage of 2*3 floats
    assert act["bytes"] == 4 * (2 * 4 + 2 * 3)
    with measure.saved_activations(lin, enabled=False) as act:
        lin(x).sum()
    assert act["bytes"] is None


def test_storage_bytes_counts_views_once():
    a, b = torch.zeros(10), torch.zeros(3, dtype=torch.float64)
    assert measure.storage_bytes([a, a[2:5], a.view(2, 5), b]) == 4 * 10 + 8 * 3


def test_interleaved_alternates_and_drops_warmup():
    calls = []
    times = measure.interleaved({"a": lambda r: calls.append(("a", r)),
                               "b": lambda r: calls.append(("b", r))}, 2, 1, torch.device("cpu"))
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert [len(v) for v in times.values()] == [2, 2]
