"""dryrun.py and real_models.py at sizes the tests can afford: the published configs give the
published parameter counts (and a closed form), the meta-device counter equals the bytes a real
CPU step allocates, the LoRA target check on tiny models of the real classes, the bf16 build
path, and one GRPO step through train_chat.grpo_stage on tiny models of both chat classes."""

import copy
import json
import math

import pytest
import torch

import bench
import dryrun
import real_models as rm
import train
from fas_experiment import FasConfig
from hir_experiment import HirConfig
from lora import apply_lora
from models import SSLClassifier, tiny_wav2vec2_config
from tiny import tiny_config
from train_classifier import ClassifierConfig, grpo_step_loss


def tiny_chat_config(modality):
    """tiny.py's config of the real class with the stand-in tokenizer's (published) token ids,
    a vocabulary they fit in, and for audio the published 30 s (3000 mel frames) encoder input."""
    config = tiny_config(modality, rm.stand_in_tokenizer())
    config.text_config.vocab_size = 151680
    if modality == "audio":
        config.audio_config.max_source_positions = 1500
    return config


@pytest.mark.parametrize("name", list(rm.PUBLISHED))
def test_published_config_gives_the_published_parameter_count(name):
    pub = rm.PUBLISHED[name]
    model = rm.meta_model(rm.published_config(name))
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, pub.digits) == pub.billions


def test_judge_count_equals_the_closed_form_of_a_qwen2_lm():
    # Qwen2.5-7B: H 3584, KV dim 4 x 128, MLP 18944, 28 layers, vocabulary 152064, untied
    H, KV, F, L, V = 3584, 512, 18944, 28, 152064
    # q, k, v with biases; o; the MLP; two norms
    per_layer = (H * H + H) + 2 * (H * KV + KV) + H * H + 3 * H * F + 2 * H
    model = rm.meta_model(rm.published_config("Qwen/Qwen2.5-7B-Instruct"))
    assert sum(p.numel() for p in model.parameters()) == L * per_layer + 2 * V * H + H


def test_meta_count_equals_the_bytes_of_a_real_classifier_step():
    cfg = ClassifierConfig(beta=0.04, old_refresh=10, lr=1e-3, num_generations=8)
    state = dryrun.training_state("classifier", cfg, tiny_wav2vec2_config())
    rows = {key: b for key, _, b in state} | {"copies": sum(b for k, _, b in state if k == "copy")}
    # the same step for real on the CPU, counted by bench.py from the tensors' storages
    model = SSLClassifier.from_config(tiny_wav2vec2_config(), head=cfg.head)
    ref, old = (copy.deepcopy(model).requires_grad_(False) for _ in range(2))
    wav, gen = torch.randn(2, 8000), [torch.Generator().manual_seed(b) for b in range(2)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss, _ = grpo_step_loss(model, wav, None, torch.tensor([0, 1]), cfg, gen, ref, old)
    loss.backward()
    opt.step()
    real = bench.state_bytes([model, ref, old], opt, 0)
    n_tensors = len(list(model.parameters()))
    assert rows["weights"] + rows["copies"] == real["parameters"]
    assert rows["copies"] == 2 * rows["weights"] and rows["grads"] == real["gradients"]
    # bench also counts AdamW's per-tensor `step` counters (CPU float32 scalars): dryrun does not
    assert rows["adamw"] + 4 * n_tensors == real["optimizer"]
    assert rows["state"] == rows["weights"] + rows["grads"] + rows["adamw"] + rows["copies"]


def test_lora_state_of_the_face_recipe_equals_the_closed_form(tmp_path):
    recipe = json.loads(open("configs/fas_qwen25vl7b.json").read())
    recipe.update(lora_r=8, num_generations=2, batch_size=3)  # read at run time, not hard-coded
    path = tmp_path / "fas.json"
    path.write_text(json.dumps(recipe))
    text, rows = dryrun.memory_table(str(path))
    # Qwen2.5-VL-7B's language model: r (in + out) on q, k, v, o, gate, up, down, 28 layers, fp32
    H, KV, F = 3584, 512, 18944
    adapters = 4 * 28 * 8 * (2 * H + 2 * (H + KV) + 2 * H + 2 * (H + F) + (F + H))
    assert rows["LoRA adapters A, B (float32)"] == adapters
    assert rows["  LoRA: adapters + gradients + AdamW"] == 4 * adapters  # weight, grad, 2 moments
    assert rows["policy weights (bfloat16, 0 of 729 tensors trainable)"] == 2 * 8292166656
    assert "R = 6 rows" in text  # B x N of the edited recipe
    assert rows["reference policy (a copy, full fine-tuning with beta > 0)"] == 0


def test_full_fine_tuning_counts_a_reference_copy_and_freezes_the_tower():
    cfg = FasConfig(model="tiny", dtype="bfloat16", lora_r=0, beta=0.04)
    config = tiny_chat_config("image")
    rows = {key: b for key, _, b in dryrun.training_state("fas", cfg, config)}
    model = dryrun.policy_model("fas", cfg, config)
    tower = sum(2 * p.numel() for n, p in model.named_parameters() if n.startswith("model.visual"))
    assert rows["copy"] == rows["weights"] and rows["grads"] == rows["weights"] - tower
    assert rows["adamw"] == 2 * rows["grads"]  # bf16 moments of bf16 parameters


@pytest.mark.parametrize("modality,tower", [("image", "visual"), ("audio", "audio_tower")])
def test_lora_target_check_on_tiny_models_of_the_real_classes(modality, tower):
    config = tiny_chat_config(modality)
    route, cls = ("fas", FasConfig) if modality == "image" else ("hir", HirConfig)
    model = dryrun.policy_model(route, cls(model="tiny", lora_r=4), config)
    check = dryrun.lora_target_check(model)
    layers = config.text_config.num_hidden_layers
    assert check["problems"] == [] and check["adapted"] == 7 * layers and check["layers"] == layers
    assert check["left_out"] and all(n.split(".")[1] == tower for n in check["left_out"])
    # the check catches an adapter in the tower and a target that matches nothing
    model = rm.meta_model(config)
    apply_lora(model, 4, 8, exclude=())
    assert any("excluded part" in p for p in dryrun.lora_target_check(model)["problems"])
    missing = dryrun.lora_target_check(model, targets=("q_proj", "qkv_proj"))["problems"]
    assert "target 'qkv_proj' matches no module" in missing


def test_materialize_builds_in_bf16_with_the_buffers_of_a_normal_build():
    config = tiny_chat_config("image")
    model = rm.materialize(rm.meta_model(config, torch.bfloat16))
    normal = rm.MODEL_CLASS[type(config)]._from_config(config, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and not p.is_meta for p in model.parameters())
    for (name, b), (_, b_ref) in zip(model.named_buffers(), normal.named_buffers()):
        assert torch.equal(b, b_ref), name  # rotary frequencies recomputed, not left empty
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
    w = model.model.language_model.layers[0].mlp.up_proj.weight.float()
    assert abs(w.std().item() - 0.02) < 0.002  # transformers' normal(0, 0.02)


def test_stand_in_tokenizer_uses_the_published_ids_and_round_trips():
    tok = rm.stand_in_tokenizer()
    for token, i in rm.QWEN_SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(token) == i
    text = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is the face real?"
            "<|im_end|>")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 151644 and ids[-1] == 151645 and tok.decode(ids) == text
    assert tok.decode([151000]) == ""  # an id of the 7B vocabulary the BPE lacks


def test_classifier_step_on_a_tiny_encoder(tmp_path):
    cfg = ClassifierConfig(beta=0.04, old_refresh=1000, lr=1e-3, num_generations=64)
    res = dryrun.classifier_step(cfg, tiny_wav2vec2_config(), tmp_path, seconds=0.5)
    assert res["copies"] == 2 and math.isfinite(res["loss"]) and res["last_layer_max_change"] > 0
    assert 0 < res["reward"] < 1


@pytest.mark.parametrize("route", ["fas", "hir"])
def test_chat_step_on_tiny_models_of_the_real_classes(route, tmp_path):
    modality = {"fas": "image", "hir": "audio"}[route]
    config = tiny_chat_config(modality)
    cls = FasConfig if route == "fas" else HirConfig
    cfg = cls(model="tiny", dtype="bfloat16", lora_r=4, lora_alpha=8, gradient_checkpointing=True,
              beta=0.04, lr=1e-3)
    short = dict(question="Real or fake?", system="") if route == "fas" else {}
    res = dryrun.chat_step(route, cfg, config, tmp_path, N=2, max_new_tokens=4, **short)
    assert math.isfinite(res["loss"]) and res["adapters_B_moved_share"] > 0
    # the short prompt: template + 4 image tokens + 3 words; HIR: the route's long question
    assert (res["prompt_tokens"] < 40) == (route == "fas")
    assert {"generate", "reference_logps", "completion_logps", "save"} <= set(res["phases"])
    assert (tmp_path / "last" / "model" / "adapter_config.json").is_file()
    assert train.load_trainer_state(tmp_path / "last")["step"] == 1
