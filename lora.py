"""LoRA written by hand (Hu et al. 2022, "LoRA: Low-rank adaptation of large language models").

A frozen linear layer W gets a trainable low-rank update:

    y = W x + b + (alpha / r) * B A dropout(x)          (LoRA paper, Eq. 3, with peft's scaling)

A (r x in) starts Kaiming-uniform and B (out x r) starts at zero, so training starts exactly at
the base model. Both routes that fine-tune a 7B chat model use it: HIR-SDD puts LoRA "on all
linear projections of the LLM backbone"; the face paper is silent, so its recipe does the same.

Choices, written down:
1. Only the language model is adapted by default. The vision tower and the audio encoder have
   their own `q_proj` / `gate_proj` / ... layers, so targets match by the last name component and
   `exclude` drops every module whose path contains `visual`, `audio_tower`,
   `multi_modal_projector` or `lm_head`.
2. Adapter weights are float32 even on a bf16 base (peft does the same by default): their
   optimizer updates are small, and bf16 would round many of them away.
3. The GRPO reference policy is the same weights with the trainable adapters switched off
   (`adapters_disabled`): no second copy of 7B weights in memory. When GRPO starts from an SFT
   adapter, `stack_adapter` first freezes that adapter into its layers (`FrozenDelta`) and puts a
   fresh trainable adapter on top, so adapters-off is the SFT model, as in HIR-SDD's code (whose
   reference is a snapshot of the weights GRPO starts from), and the KL is 0 at the first step.
   The fresh adapter starts at B = 0, where the code trains on the SFT adapter itself: the same
   function at the start, another parametrisation of the update.
4. Saved files follow peft's layout (adapter_config.json + adapter_model.safetensors, keys
   `base_model.model.<module path>.lora_A.weight`) so `peft.PeftModel.from_pretrained` can load
   them. `target_modules` is saved as the exact list of adapted module paths: peft matches list
   entries as full names or name suffixes, and a bare "gate_proj" would also hit the vision MLP.
   A stacked layer is saved as ONE adapter of rank r_frozen + r: A = [A_f; A], B = [s_f B_f, s B]
   with alpha = rank (scale 1), so B A is exactly s_f B_f A_f + s B A and peft loads it as is.
"""

import json
import math
import os
import re
from contextlib import contextmanager

import torch
from safetensors.torch import load_file, save_file
from torch import nn

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EXCLUDE = ("visual", "audio_tower", "multi_modal_projector", "lm_head")
CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


class LoraLinear(nn.Module):
    """A frozen `nn.Linear` plus the low-rank update (alpha / r) * B A (LoRA Eq. 3)."""

    def __init__(self, base_layer, r, alpha, dropout=0.0, generator=None):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        self.base_layer = base_layer  # peft's attribute name, so state-dict paths match peft
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, dtype=torch.float32)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, dtype=torch.float32)
        # peft's default init; on the CPU so a CPU generator makes it reproducible anywhere
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B.weight)  # B = 0: the adapted model starts as the base model
        self.to(base_layer.weight.device)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.r, self.alpha, self.dropout, self.scale = r, alpha, dropout, alpha / r
        self.enabled, self.merged = True, False

    def delta_weight(self):
        """(alpha / r) * B @ A, shape (out, in): the update that `merge` adds to W."""
        return self.scale * (self.lora_B.weight @ self.lora_A.weight)

    @torch.no_grad()
    def merge(self):
        """W <- W + (alpha / r) B A, so inference runs at the base layer's cost."""
        if not self.merged:
            w = self.base_layer.weight
            w += self.delta_weight().to(w.dtype)  # exact only up to w's precision (bf16: ~3 digits)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """W <- W - (alpha / r) B A, undoing `merge`."""
        if self.merged:
            w = self.base_layer.weight
            w -= self.delta_weight().to(w.dtype)
            self.merged = False

    def forward(self, x):
        y = self.base_layer(x)
        if self.merged or not self.enabled:
            return y
        h = self.lora_dropout(x).to(self.lora_A.weight.dtype)
        return y + (self.scale * self.lora_B(self.lora_A(h))).to(y.dtype)


class FrozenDelta(nn.Module):
    """A trained adapter frozen into its layer: y = W x + b + B' A x with B' = (alpha / r) B.

    Nothing here trains and there is no dropout (the adapter is part of the model now), so
    `adapters_disabled` leaves it on. A LoraLinear can wrap it like an nn.Linear (`stack_adapter`).
    """

    def __init__(self, lora):
        super().__init__()
        if lora.merged:
            raise ValueError("unmerge the adapter before freezing it")
        self.base_layer = lora.base_layer
        self.in_features = lora.base_layer.in_features
        self.out_features = lora.base_layer.out_features
        self.register_buffer("lora_A", lora.lora_A.weight.detach().clone())                 # (r, in)
        self.register_buffer("lora_B", lora.scale * lora.lora_B.weight.detach().clone())    # (out, r)

    @property
    def weight(self):  # what LoraLinear reads for device and dtype, and what merge() changes
        return self.base_layer.weight

    def forward(self, x):
        y = self.base_layer(x)
        return y + (x.to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T).to(y.dtype)


def _frozen_factors(layer):
    """(A, B') of every FrozenDelta below `layer` (a stack of frozen adapters), outermost first."""
    out = []
    while isinstance(layer, FrozenDelta):
        out.append((layer.lora_A, layer.lora_B))
        layer = layer.base_layer
    return out


def _is_target(name, target_modules, exclude):
    if isinstance(target_modules, str):  # peft also allows one regex over the full path
        return re.fullmatch(target_modules, name) is not None
    if name in target_modules:  # an exact path: explicit, so `exclude` does not apply
        return True
    parts = name.split(".")
    return parts[-1] in target_modules and not any(p in exclude for p in parts)


def lora_modules(model):
    """{module path: LoraLinear} for every adapted layer of `model`, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def apply_lora(model, r=8, alpha=16, dropout=0.0, target_modules=TARGET_MODULES, exclude=EXCLUDE,
               seed=0):
    """Wrap every matching `nn.Linear` in a `LoraLinear`; freeze all other weights.

    Returns the list of adapted module paths. Afterwards only lora_A / lora_B require grad.
    The A matrices are drawn, in module order, from a generator seeded with `seed`.
    """
    if lora_modules(model):
        raise ValueError("model already has LoRA adapters; apply_lora twice would nest them")
    names = [n for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, FrozenDelta)) and _is_target(n, target_modules, exclude)]
    if not names:
        raise ValueError(f"no nn.Linear matches target_modules={target_modules!r}")
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        parent, _, child = name.rpartition(".")
        parent = model.get_submodule(parent)
        layer = LoraLinear(getattr(parent, child), r, alpha, dropout, generator)
        # New modules start in train mode; in an eval-mode model their dropout would stay on.
        setattr(parent, child, layer.train(model.training))
    return names


def stack_adapter(model, r, alpha, dropout=0.0, seed=0):
    """Freeze the model's adapters into their layers (FrozenDelta) and put a fresh trainable
    adapter (B = 0) on each: the model's function is unchanged and `adapters_disabled` now runs
    the model as it was, the GRPO reference (choice 3). Returns the adapted paths."""
    frozen = lora_modules(model)
    if not frozen:
        raise ValueError("model has no LoRA adapters to freeze")
    for name, m in frozen.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, FrozenDelta(m))
    return apply_lora(model, r, alpha, dropout, target_modules=tuple(frozen), exclude=(), seed=seed)


def set_adapters(model, enabled):
    """Switch every adapter on or off (off = the base model's function)."""
    for m in lora_modules(model).values():
        if m.merged and not enabled:
            raise RuntimeError("adapters are merged into the weights; call unmerge() first")
        m.enabled = enabled


@contextmanager
def adapters_disabled(model):
    """`with adapters_disabled(model):` runs the base model (the GRPO reference), then restores."""
    before = {n: m.enabled for n, m in lora_modules(model).items()}
    set_adapters(model, False)
    try:
        yield model
    finally:
        for n, m in lora_modules(model).items():
            m.enabled = before[n]


def save_adapter(model, folder, base_model_name_or_path):
    """Write the adapters in peft's layout: adapter_config.json + adapter_model.safetensors."""
    mods = lora_modules(model)
    if not mods:
        raise ValueError("model has no LoRA adapters to save")
    first = next(iter(mods.values()))
    os.makedirs(folder, exist_ok=True)
    tensors, ranks = {}, set()
    for name, m in mods.items():
        A, B = m.lora_A.weight.detach(), m.lora_B.weight.detach()
        frozen = _frozen_factors(m.base_layer)
        if frozen:  # one adapter of rank r_frozen + r, scales folded into B (choice 4)
            A = torch.cat([a for a, _ in frozen] + [A])
            B = torch.cat([b for _, b in frozen] + [m.scale * B], dim=1)
        ranks.add(A.shape[0])
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A.cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B.cpu().contiguous()
    if len(ranks) > 1:
        raise ValueError(f"adapters of different ranks {sorted(ranks)} do not fit one config")
    save_file(tensors, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
    r = ranks.pop()
    stacked = r != first.r
    config = dict(
        peft_type="LORA", task_type="CAUSAL_LM", base_model_name_or_path=base_model_name_or_path,
        r=r, lora_alpha=r if stacked else first.alpha, lora_dropout=first.dropout,
        target_modules=list(mods), bias="none", fan_in_fan_out=False, inference_mode=True,
        init_lora_weights=True, use_rslora=False, use_dora=False, modules_to_save=None,
    )
    with open(os.path.join(folder, CONFIG_NAME), "w") as f:
        json.dump(config, f, indent=2)


def read_adapter_config(folder):
    """The adapter_config.json of `folder`, checked to be a plain LoRA adapter."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}")
    with open(path) as f:
        config = json.load(f)
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("use_rslora"):
        raise ValueError(f"{path}: only plain LoRA adapters are supported (no DoRA, no rsLoRA)")
    # fields whose non-default value changes the adapter's function: honouring them is not
    # written here, so loading would silently compute something else (e.g. a v_proj scale)
    unsupported = {"alpha_pattern": {}, "rank_pattern": {}, "layers_to_transform": None,
                   "layers_pattern": None, "exclude_modules": None, "lora_bias": False,
                   "bias": "none", "modules_to_save": None}
    for field, default in unsupported.items():
        if config.get(field, default) not in (default, [], {}):
            raise ValueError(f"{path}: field {field} = {config[field]!r} is not supported by "
                             f"this loader (only {default!r})")
    return config


def load_adapter(model, folder):
    """Load a peft-layout adapter into `model`, applying LoRA first if the model has none."""
    config = read_adapter_config(folder)
    targets, paths = config["target_modules"], {n for n, _ in model.named_modules()}
    dotted = [t for t in targets if "." in t and t not in paths] if isinstance(targets, list) else []
    if dotted:  # peft matches name suffixes; this loader full paths or last names only
        raise ValueError(f"{os.path.join(folder, CONFIG_NAME)}: field target_modules entry "
                         f"{dotted[0]!r} is a dotted suffix, not a module path of the model")
    if not lora_modules(model):
        apply_lora(model, config["r"], config["lora_alpha"], config.get("lora_dropout", 0.0),
                   target_modules=config["target_modules"], exclude=())
    path = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {folder}")
    state = load_file(path)
    with torch.no_grad():
        for name, m in lora_modules(model).items():
            for part in ("lora_A", "lora_B"):
                key = f"{PEFT_PREFIX}{name}.{part}.weight"
                if key not in state:
                    raise ValueError(f"{path}: missing tensor {key}")
                getattr(m, part).weight.copy_(state.pop(key))
    if state:
        raise ValueError(f"{path}: tensors for modules the model lacks: {sorted(state)[:3]} ...")
    return list(lora_modules(model))
