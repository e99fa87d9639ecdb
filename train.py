"""Entry point and shared plumbing of the training loops.

    python train.py                                  # the classifier route's CPU miniature (main job)
    python train.py --quick                          # the same at toy size (< 1 minute)
    python train.py --recipe configs/fas_mini.json   # any recipe; CLI flags override its fields
    python train.py --route classifier --help        # every field of a route's config, with its doc

What lives here is what every route shares, so that each route file holds only its algorithm:
configuration (one dataclass per route, overridden by a JSON recipe, then by the command line),
device and mixed precision, checkpoints (written to a temporary name, then renamed), the JSON-lines
log, and the guard that stops a run which went NaN before it can overwrite a good checkpoint.
The route modules are imported lazily by `main`, so `import train` stays cheap and acyclic.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

# `python train.py` with no recipe runs this one: the classifier route's CPU miniature.
DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "classifier_mini.json"

ROUTES = {  # route name -> (module, config class, run function)
    "classifier": ("train_classifier", "ClassifierConfig", "run"),
    "fas": ("fas_experiment", "FasConfig", "run_experiment"),
    "hir": ("hir_experiment", "HirConfig", "run_experiment"),
}


# ----------------------------------------------------------------------------- configuration

def option(default, help: str):
    """A config dataclass field with its one-line doc (shown by --help); lists/dicts copied."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def config_from_args(cls, argv: list[str], recipe: dict | None = None):
    """Build a config dataclass: its defaults, then the recipe's fields, then `--field value` flags.

    Every field's `metadata["help"]` becomes its `--help` line (the CleanRL habit). Lists and dicts
    are given on the command line as JSON (`--test_sets '[...]'`). Unknown recipe keys are an
    error, never silently ignored: a typo in a recipe would otherwise train the default.
    """
    recipe = dict(recipe or {})
    recipe.pop("route", None)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(recipe) - names)
    if unknown:
        raise ValueError(f"unknown field(s) for {cls.__name__}: {', '.join(unknown)}")
    parser = argparse.ArgumentParser(description=cls.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--recipe", default=None, help="JSON recipe (read before these flags)")
    parser.add_argument("--route", default=None, help="route: " + ", ".join(ROUTES))
    for f in dataclasses.fields(cls):
        default = recipe.get(f.name, _default_of(f))
        kind = type(default)
        if kind is bool:
            parser.add_argument(f"--{f.name}", default=default, help=f.metadata.get("help", ""),
                                action=argparse.BooleanOptionalAction)
        elif kind in (list, dict) or default is None:
            parser.add_argument(f"--{f.name}", default=default, type=_json_or_str,
                                help=f.metadata.get("help", ""))
        else:
            parser.add_argument(f"--{f.name}", default=default, type=kind,
                                help=f.metadata.get("help", ""))
    args = vars(parser.parse_args(argv))
    args.pop("recipe"), args.pop("route")
    return cls(**args)


def _default_of(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def _json_or_str(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def save_config(cfg, folder: Path) -> None:
    """Every run writes its resolved config beside its checkpoints (`config.json`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


# ----------------------------------------------------------------------------- device & precision

def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast: on by default on CUDA; on the CPU only when asked (the tests exercise it).

    Matrix products run in bf16; the route code casts logits to fp32 before log-softmax, so
    log-probs, ratios and the loss are always computed in fp32 (bf16's 8-bit mantissa would turn a
    ratio of 1.001 into 1.0 and hide the clipping).
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(folder: Path, save_model, trainer_state: dict) -> None:
    """Write a checkpoint atomically: into `folder.tmp`, then rename over `folder`.

    `save_model(path)` writes the model (a `save_pretrained`-style folder); `trainer_state` holds
    the optimizer, scheduler and step. A crash mid-write leaves the previous checkpoint intact.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / "model")
    torch.save(trainer_state, tmp / "trainer_state.pt")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_trainer_state(folder: Path) -> dict:
    path = Path(folder) / "trainer_state.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trainer state in checkpoint folder {folder}")
    return torch.load(path, weights_only=False)


class NonFiniteLoss(RuntimeError):
    """Raised when a step's loss is NaN or inf; the last good checkpoint is left untouched."""


def check_finite(loss: torch.Tensor, step: int, checkpoint_dir: Path) -> float:
    """Return the loss as a float, or stop the run if it is not finite.

    This is the one CPU-GPU sync point of a step (we log the loss every step anyway). We raise
    *before* the optimizer step and before any checkpoint write, so the weights on disk stay the
    last good ones.
    """
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(f"loss is {value} at step {step}; stopping. The last good checkpoint "
                            f"in {checkpoint_dir} was left intact.")
    return value


def warmup_lambda(warmup_steps: int, total_steps: int = 0, floor: float = 1.0):
    """LR multiplier of optimizer step k (0-based): a linear warm-up, then a cosine decay to a floor.

        k <  warmup_steps:  (k + 1) / warmup_steps
        k >= warmup_steps:  floor + (1 - floor) * (1 + cos(pi * k / total_steps)) / 2

    the schedule of HIR-SDD's code (LinearWarmupCosineLRScheduler: init_lr decaying to
    min_lr = floor * init_lr), whose cosine runs over all `total_steps`, warm-up included, so it
    has begun to fall when the warm-up ends. floor = 1 (or total_steps = 0) keeps the lr constant
    after the warm-up. Departure: the warm-up starts at lr / warmup_steps, not at the code's
    warmup_start_lr (1e-8 to 1e-6).
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"lr floor must be in [0, 1] (a fraction of the peak lr), got {floor}")

    def multiplier(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps <= 0 or floor == 1.0:
            return 1.0
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps)
                                                             / total_steps))
    return multiplier


# ----------------------------------------------------------------------------- logging

class JsonlLog:
    """One JSON line per step in `metrics.jsonl` (overwritten at the start of a fresh run)."""

    def __init__(self, path: Path, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a" if resume else "w")
        self.t0 = time.time()

    def log(self, step: int, **values) -> None:
        row = {"step": step, "time": round(time.time() - self.t0, 3)}
        row.update({k: _plain(v) for k, v in values.items()})
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_report(folder: Path, text: str, name: str = "tables.md") -> Path:
    """Print a run's tables and keep them: `folder/name` holds exactly what was printed."""
    print(text)
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
    return path


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().float().item()
    if isinstance(v, float):
        return round(v, 6)
    return v


def seed_for(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, step, index, ...), stable across runs.

    Library code never touches the global RNG: each random draw takes a generator seeded from
    (seed, step, ...) so that a resumed run sees exactly the draws an uninterrupted one would.
    """
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def batch_indices(n: int, batch_size: int, seed: int, step: int):
    """The example indices of a step: epoch-wise shuffles, all derived from (seed, step).

    A resumed run at step k draws exactly the batch that an uninterrupted run drew at step k.
    """
    import numpy as np
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[pos * batch_size:(pos + 1) * batch_size]


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    pre.add_argument("--route")
    known, _ = pre.parse_known_args(argv)
    if not known.recipe and known.route in (None, "classifier"):
        known.recipe = str(DEFAULT_RECIPE)
    recipe = {}
    if known.recipe:
        path = Path(known.recipe)
        if not path.exists():
            raise SystemExit(f"recipe not found: {path}")
        try:
            recipe = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}: line {e.lineno}: not valid JSON ({e.msg})")
    route = known.route or recipe.get("route", "classifier")
    if route not in ROUTES:
        raise SystemExit(f"unknown route {route!r}; choose from {', '.join(ROUTES)}")
    module_name, cls_name, fn_name = ROUTES[route]
    import transformers
    transformers.logging.disable_progress_bar()  # our own tqdm bar is the one to watch
    module = __import__(module_name)
    cfg = config_from_args(getattr(module, cls_name), argv, recipe)
    return getattr(module, fn_name)(cfg)


if __name__ == "__main__":
    main()
