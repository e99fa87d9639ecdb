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
import typing
from pathlib import Path

import torch
from tqdm import tqdm

# `python train.py` with no recipe runs this one: the classifier route's CPU miniature.
DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "classifier_mini.json"

ROUTES = {  # route name -> (module, config class, run function)
    "classifier": ("classifier_experiment", "ClassifierConfig", "run"),
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
    cfg = cls(**args)
    check_config(cfg)
    return cfg


def _type_ok(value, kind) -> bool:
    """isinstance with JSON's number rules: a bool is no int, an int is a fine float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_config(cfg) -> None:
    """Fail before any work on a value of the wrong type or out of range, naming the field.

    Types come from the dataclass annotations (a recipe's "quick": "false" is a string, not a
    bool; null is nothing); ranges from the class's MINIMUMS {field: lowest value}; a class may
    add rules across fields in a `check()` method."""
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), hints[f.name]
        if not _type_ok(value, kind):
            hint = (f" (lists and dicts are JSON: --{f.name} '[\"sft\"]')"
                    if kind in (list, dict) and isinstance(value, str) else "")
            raise ValueError(f"{cls.__name__}.{f.name}: expected {kind.__name__}, got "
                             f"{value!r} ({type(value).__name__}){hint}")
    for name, low in getattr(cls, "MINIMUMS", {}).items():
        if getattr(cfg, name) < low:
            raise ValueError(f"{cls.__name__}.{name} must be >= {low}, got {getattr(cfg, name)!r}")
    if hasattr(cfg, "check"):
        cfg.check()


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
    the optimizer, scheduler and step (also written to checkpoint.json, cheap to read). A crash
    mid-write leaves the previous checkpoint intact; one between the two renames is repaired by
    `resolve_checkpoint`.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / "model")
    torch.save(trainer_state, tmp / "trainer_state.pt")
    # written last: a folder holding it is complete
    (tmp / "checkpoint.json").write_text(json.dumps({"step": trainer_state.get("step")}) + "\n")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(folder: Path) -> Path:
    """The checkpoint folder to resume from, repairing a save that a crash cut short.

    save_checkpoint renames `folder` to `folder.old`, then `folder.tmp` to `folder`. Killed
    between the two, it leaves no `folder`: the complete `folder.tmp` (newer) or else
    `folder.old` is renamed back, and the repair is said."""
    folder = Path(folder)
    tmp, old = (folder.with_name(folder.name + x) for x in (".tmp", ".old"))
    if not folder.exists():
        for candidate in (tmp, old):
            if (candidate / "checkpoint.json").is_file():
                os.replace(candidate, folder)
                print(f"{folder}: a save was interrupted; recovered it from {candidate}")
                break
        else:
            raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    return folder


def last_step(folder: Path):
    """The step of the complete checkpoint in `folder`, or None if there is none."""
    path = Path(folder) / "checkpoint.json"
    return json.loads(path.read_text())["step"] if path.is_file() else None


def load_trainer_state(folder: Path) -> dict:
    path = Path(folder) / "trainer_state.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trainer state in checkpoint folder {folder}")
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # a truncated or corrupt file: name it, whatever torch raised
        raise ValueError(f"{path}: cannot be read, truncated or corrupt ({e})") from None


class NonFiniteLoss(RuntimeError):
    """Raised when a step's loss, logits, gradient or weights are NaN or inf; the last good
    checkpoint is left untouched."""


def stop_non_finite(what: str, step: int, checkpoint_dir: Path):
    """Raise NonFiniteLoss naming what went non-finite, the step and the last good checkpoint
    (only when one was written)."""
    last = Path(checkpoint_dir) / "last"
    saved = last_step(last)
    where = (f"The last good checkpoint, {last} (step {saved}), was left intact."
             if saved is not None else "No checkpoint had been written yet.")
    raise NonFiniteLoss(f"{what} at step {step}; stopping. {where}")


def check_finite(loss: torch.Tensor, step: int, checkpoint_dir: Path, what: str = "loss"):
    """Return the loss as a float, or stop the run if it is not finite.

    This is the one CPU-GPU sync point of a step (we log the loss every step anyway). We raise
    *before* the optimizer step and before any checkpoint write, so the weights on disk stay the
    last good ones.
    """
    value = float(loss.detach()) if loss.numel() == 1 else float(loss.detach().float().sum())
    if not math.isfinite(value):
        stop_non_finite(f"{what} is {value}", step, checkpoint_dir)
    return value


def check_weights(model: torch.nn.Module, step: int, checkpoint_dir: Path) -> None:
    """Never save non-finite weights: stop instead (the last good checkpoint stays)."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            stop_non_finite(f"weight {name} is not finite", step, checkpoint_dir)


@contextlib.contextmanager
def dropout_off(model):
    """Every nn.Dropout of `model` at p = 0, every config's layerdrop at 0 and every batch norm
    on its running statistics, inside the block, restored after: the model in train mode
    (gradient checkpointing stays on) computes the function it computes in eval mode. As TRL's
    disable_dropout, for GRPO, where the ratio pi / pi_old and the KL must compare one function,
    not a randomly thinned one."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.training]
    for m in norms:
        m.eval()
    # (object, attribute) of every rate: nn.Dropout's p, a config's layerdrop, and the float
    # rates attention layers pass to their functional dropout (transformers' `dropout`,
    # `attention_dropout`)
    rates = [(m, "p") for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    configs = {id(c): c for m in model.modules() for c in [getattr(m, "config", None)]
               if c is not None and getattr(c, "layerdrop", 0)}
    rates += [(c, "layerdrop") for c in configs.values()]
    rates += [(m, a) for m in model.modules() for a in ("dropout", "attention_dropout")
              if isinstance(getattr(m, a, None), float) and getattr(m, a)]
    before = [getattr(o, a) for o, a in rates]
    for o, a in rates:
        setattr(o, a, 0.0)
    try:
        yield
    finally:
        for (o, a), p in zip(rates, before):
            setattr(o, a, p)
        for m in norms:
            m.train()


def apply_lr(lr: float, opt, sched) -> None:
    """On resume: the learning rate asked for now replaces the one in the optimizer state
    (said when they differ), at the scheduler's current multiplier."""
    if sched.base_lrs != [lr] * len(sched.base_lrs):
        print(f"resume: learning rate {sched.base_lrs[0]:g} of the checkpoint replaced by {lr:g}")
    sched.base_lrs = [lr] * len(sched.base_lrs)
    for group, lam in zip(opt.param_groups, sched.lr_lambdas):
        group["lr"] = lr * lam(sched.last_epoch)


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

def steps_bar(steps, desc: str, show: bool = True):
    """A training loop's step bar: off where `show` is False (a torchrun rank other than 0)
    and in a process with TQDM_DISABLE set (a seed worker: two workers' bars would garble the
    terminal). tqdm reads that variable only for arguments not given, so it is read here."""
    quiet = os.environ.get("TQDM_DISABLE", "") not in ("", "0")
    return tqdm(steps, desc=desc, leave=False, disable=quiet or not show)


class JsonlLog:
    """One JSON line per step in `metrics.jsonl` (overwritten at the start of a fresh run).

    Resumed at a checkpoint of step k (`resume_step`), the rows logged after k by the run that
    was cut short are dropped: the resumed run logs those steps again."""

    def __init__(self, path: Path | None, resume: bool = False, resume_step: int | None = None):
        self.path = path and Path(path)
        if self.path is None:  # a process that does not write (not rank 0): log() does nothing
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and resume_step is not None and self.path.is_file():
            keep = [line for line in self.path.read_text().splitlines(keepends=True)
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(keep))
        self.file = open(self.path, "a" if resume else "w")
        self.t0 = time.time()

    def log(self, step: int, **values) -> None:
        if self.path is None:
            return
        row = {"step": step, "time": round(time.time() - self.t0, 3)}
        row.update({k: _plain(v) for k, v in values.items()})
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.path is not None:
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


class DynamicBatches:
    """Batches holding at most `max_seconds` of audio, as the speech paper's code batches
    (SpeechBrain's dynamic batching, max_batch_length = 100 s): each epoch a shuffle seeded by
    (seed, epoch), then consecutive clips packed while their summed duration fits (a clip
    longer than max_seconds is a batch of its own). Like `batch_indices`, the batch of a step
    derives from (seed, step) alone, so a resumed run sees the same batches. Departure:
    SpeechBrain first sorts clips into 20 length buckets (less padding); this packs in shuffled
    order."""

    def __init__(self, seconds, max_seconds: float, seed: int):
        import numpy as np
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.seconds, self.max_seconds, self.seed = np.asarray(seconds, float), max_seconds, seed
        self._ends = []          # cumulative number of steps at the end of each epoch built so far
        self._cached = (None, None)

    def epoch(self, epoch: int) -> list:
        """The batches (lists of indices) of one epoch."""
        import numpy as np
        if self._cached[0] == epoch:
            return self._cached[1]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.seconds))
        batches, current, total = [], [], 0.0
        for i in order:
            if current and total + self.seconds[i] > self.max_seconds:
                batches.append(current)
                current, total = [], 0.0
            current.append(int(i))
            total += self.seconds[i]
        batches.append(current)
        self._cached = (epoch, batches)
        return batches

    def steps_in(self, epochs: int) -> int:
        """Optimizer steps in the first `epochs` epochs."""
        while len(self._ends) < epochs:
            self._ends.append((self._ends[-1] if self._ends else 0) + len(self.epoch(len(self._ends))))
        return self._ends[epochs - 1] if epochs else 0

    def __call__(self, step: int):
        import bisect
        import numpy as np
        while not self._ends or self._ends[-1] <= step:
            self.steps_in(len(self._ends) + 1)
        e = bisect.bisect_right(self._ends, step)   # the epoch that holds this step
        return np.array(self.epoch(e)[step - (self._ends[e - 1] if e else 0)])


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    pre.add_argument("--route")
    pre.add_argument("--quick", action=argparse.BooleanOptionalAction, default=None)
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
    if known.quick if known.quick is not None else recipe.get("quick") is True:
        # the route's toy sizes sit between the recipe and the flags: a flag the user gives
        # beside --quick is kept
        recipe = {**recipe, **module.QUICK, "quick": True}
    cfg = config_from_args(getattr(module, cls_name), argv, recipe)
    return getattr(module, fn_name)(cfg)


if __name__ == "__main__":
    main()
