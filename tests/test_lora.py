"""LoRA (lora.py) against independent computations: the closed form W x + b + s B A x,
the base model's own outputs, and peft's documented file layout; a stacked adapter (a frozen
SFT adapter under a trainable one) against its closed form and the unstacked SFT model."""

import json
import os
import re

import pytest
import torch
from torch import nn

from chat import ChatPolicy
from lora import (
    EXCLUDE, FrozenDelta, LoraLinear, adapters_disabled, apply_lora, load_adapter, lora_modules,
    save_adapter, set_adapters, stack_adapter,
)

IDS = torch.tensor([[1, 20, 33, 47, 58, 2, 101, 7]])
LAYERS = 2  # tiny text model depth (tiny.py)


def tiny_lm(seed=0):
    return ChatPolicy.tiny("text", seed=seed).model.eval()


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def randomize_B(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.copy_(0.1 * torch.randn(m.lora_B.weight.shape, generator=g))


def trained_layer(base, r, alpha):
    """A LoraLinear on `base` whose B is random (as after training), from the global seed."""
    layer = LoraLinear(base, r=r, alpha=alpha)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    return layer


def adapted_lm():
    """The tiny LM with r = 4, alpha = 8 adapters whose B is random (as after training)."""
    model = tiny_lm()
    apply_lora(model, r=4, alpha=8)
    randomize_B(model)
    return model


def test_lora_linear_matches_closed_form():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = trained_layer(base, r=3, alpha=6)
    x = torch.randn(4, 6)
    W, b, A, B = base.weight, base.bias, layer.lora_A.weight, layer.lora_B.weight
    expected = x @ W.T + b + (6 / 3) * x @ A.T @ B.T  # y = W x + b + (alpha / r) B A x
    torch.testing.assert_close(layer(x), expected)


def test_zero_init_B_leaves_outputs_unchanged():
    model = tiny_lm()
    before = logits(model)
    names = apply_lora(model, r=4, alpha=8)
    assert len(names) == 7 * LAYERS
    assert torch.equal(logits(model), before)  # B = 0: exactly the base model


def test_only_lora_params_require_grad_and_A_gets_no_grad_at_init():
    model = tiny_lm()
    apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(re.search(r"\.lora_[AB]\.weight$", n) for n in trainable)
    assert len(trainable) == 2 * 7 * LAYERS
    model(input_ids=IDS).logits.sum().backward()
    m = next(iter(lora_modules(model).values()))
    # dL/dA = s B^T (dL/dy) x^T = 0 while B = 0; dL/dB is not.
    assert torch.count_nonzero(m.lora_A.weight.grad) == 0
    assert torch.count_nonzero(m.lora_B.weight.grad) > 0


def test_merge_unmerge_and_merged_forward():
    model = adapted_lm()
    unmerged = logits(model)
    weights = {n: m.base_layer.weight.clone() for n, m in lora_modules(model).items()}
    for m in lora_modules(model).values():
        m.merge()
    torch.testing.assert_close(logits(model), unmerged, atol=1e-5, rtol=1e-5)
    for n, m in lora_modules(model).items():
        torch.testing.assert_close(m.base_layer.weight, weights[n] + m.delta_weight())
        m.unmerge()
        torch.testing.assert_close(m.base_layer.weight, weights[n], atol=1e-6, rtol=0)
    m.merge()
    with pytest.raises(RuntimeError):  # disabling merged adapters would silently keep B A
        set_adapters(model, False)


def test_adapters_off_equals_base():
    base = logits(tiny_lm())
    model = adapted_lm()
    adapted = logits(model)
    assert not torch.allclose(adapted, base)
    with adapters_disabled(model):
        assert torch.equal(logits(model), base)
    assert torch.equal(logits(model), adapted)  # switched back on afterwards


def test_media_towers_are_excluded():
    for modality, tower in (("image", "visual"), ("audio", "audio_tower")):
        model = ChatPolicy.tiny(modality).model
        names = apply_lora(model, r=2, alpha=4)
        assert len(names) == 7 * LAYERS
        assert all("language_model" in n for n in names)
        assert not any(tower in n.split(".") for n in names)
        assert tower in EXCLUDE


def test_save_load_roundtrip_and_peft_layout(tmp_path):
    model = tiny_lm()
    names = apply_lora(model, r=4, alpha=8, dropout=0.05)
    randomize_B(model)
    expected = logits(model)
    save_adapter(model, tmp_path, "Qwen/Qwen2.5-0.5B-Instruct")
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.05)
    assert config["bias"] == "none"
    assert config["base_model_name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config["target_modules"] == names

    from safetensors.torch import load_file
    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    # peft: "base_model.model." + module path + ".lora_A.weight", adapter name ("default") removed
    pattern = re.compile(r"^base_model\.model\.(.+)\.lora_[AB]\.weight$")
    assert all(pattern.match(k) for k in keys) and len(keys) == 2 * len(names)
    assert {pattern.match(k).group(1) for k in keys} == set(names)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys

    fresh = tiny_lm()  # same base weights, no adapters yet: load_adapter applies them
    assert load_adapter(fresh, tmp_path) == names
    assert torch.equal(logits(fresh.eval()), expected)


def test_load_adapter_rejects_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_adapter(tiny_lm(), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps(dict(peft_type="IA3")))
    with pytest.raises(ValueError):
        load_adapter(tiny_lm(), tmp_path)


def test_apply_twice_or_nothing_matched_raises():
    model = tiny_lm()
    apply_lora(model, r=2, alpha=2)
    with pytest.raises(ValueError):
        apply_lora(model, r=2, alpha=2)
    with pytest.raises(ValueError):
        apply_lora(tiny_lm(), r=2, alpha=2, target_modules=("no_such_layer",))


def test_init_is_reproducible_per_seed():
    a, b, c = tiny_lm(), tiny_lm(), tiny_lm()
    apply_lora(a, r=2, alpha=4, seed=3)
    apply_lora(b, r=2, alpha=4, seed=3)
    apply_lora(c, r=2, alpha=4, seed=4)
    A = [m.lora_A.weight for m in lora_modules(a).values()]
    assert all(torch.equal(x, m.lora_A.weight) for x, m in zip(A, lora_modules(b).values()))
    assert not torch.equal(A[0], next(iter(lora_modules(c).values())).lora_A.weight)


def test_stacked_layer_matches_closed_form_and_adapters_off_is_the_frozen_model():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    sft = trained_layer(base, r=3, alpha=6)
    W, b, A1, B1 = base.weight, base.bias, sft.lora_A.weight.clone(), sft.lora_B.weight.clone()
    grpo = trained_layer(FrozenDelta(sft), r=2, alpha=8)
    A2, B2 = grpo.lora_A.weight, grpo.lora_B.weight
    x = torch.randn(4, 6)
    # y = W x + b + (6 / 3) B1 A1 x + (8 / 2) B2 A2 x
    expected = x @ W.T + b + 2 * x @ A1.T @ B1.T + 4 * x @ A2.T @ B2.T
    torch.testing.assert_close(grpo(x), expected)
    grpo.enabled = False  # adapters off: the SFT layer, not the base
    torch.testing.assert_close(grpo(x), x @ W.T + b + 2 * x @ A1.T @ B1.T)


def test_stack_adapter_keeps_the_function_and_makes_adapters_off_the_sft_model():
    base = logits(tiny_lm())
    model = adapted_lm()
    sft = logits(model)
    names = stack_adapter(model, r=2, alpha=4, seed=5)
    assert names == list(lora_modules(model)) and len(names) == 7 * LAYERS
    assert torch.equal(logits(model), sft)  # fresh B = 0: still the SFT model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * len(names)  # only the fresh adapter trains
    assert all(re.search(r"\.lora_[AB]\.weight$", n) and "base_layer.lora" not in n
               for n in trainable)
    randomize_B(model, seed=2)
    with adapters_disabled(model):  # the GRPO reference: the SFT model (choice 3)
        torch.testing.assert_close(logits(model), sft)
    assert not torch.allclose(logits(model), base)


def test_stacked_adapter_saves_as_one_peft_adapter_that_reloads_exactly(tmp_path):
    model = adapted_lm()
    names = stack_adapter(model, r=2, alpha=16)
    randomize_B(model, seed=3)
    stacked = logits(model)
    save_adapter(model, tmp_path, "base")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    # rank 4 + 2, scales folded into B: alpha = r, scale 1 (choice 4)
    assert (config["r"], config["lora_alpha"]) == (6, 6) and config["target_modules"] == names
    fresh = tiny_lm()
    load_adapter(fresh, tmp_path)
    torch.testing.assert_close(logits(fresh.eval()), stacked, atol=1e-5, rtol=1e-5)
    assert stack_adapter(fresh, r=2, alpha=4) == names  # a stacked result can be stacked again
    torch.testing.assert_close(logits(fresh), stacked, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        stack_adapter(tiny_lm(), r=2, alpha=4)
