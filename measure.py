"""Timing and memory counting for bench.py: interleaved repeats, medians, counted bytes.

Why it is done this way is in bench.py's notes 1 (interleaving) and 4 (memory counted, not
sampled).
"""
import gc
import statistics
import time
import warnings
from contextlib import contextmanager, nullcontext

import torch


def stats(xs) -> dict:
    xs = list(xs)
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()  # the clock must not stop before the device does


def interleaved(steps: dict, repeats: int, warmup: int, device) -> dict:
    """{name: fn(r)} -> {name: [seconds]}: repeat r runs every step once, in turn (note 1)."""
    times = {name: [] for name in steps}
    for r in range(warmup + repeats):
        for name, fn in steps.items():
            sync(device)
            t = time.perf_counter()
            fn(r)
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (a view or a tied weight counts once)."""
    seen = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes()
            for t in tensors}
    return sum(seen.values())


@contextmanager
def saved_activations(model, enabled=True):
    """Count what autograd saves for backward inside the block (note 4): yields a dict whose
    "bytes" is set at exit (None when not `enabled`: the hooks would slow a timed step).
    Parameters are saved too, but they are counted as parameters."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept, out = {}, {"bytes": None}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            kept[(t.device, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if enabled else nullcontext():
        yield out
    out["bytes"] = sum(kept.values()) if enabled else None


def state_bytes(models, opt, activations: int) -> dict:
    """Parameters of all `models` (policy first), the policy's gradients, the AdamW state."""
    grads = [p.grad for p in models[0].parameters() if p.grad is not None]
    opt_state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    out = {"parameters": storage_bytes([p for m in models for p in m.parameters()]),
           "gradients": storage_bytes(grads), "optimizer": storage_bytes(opt_state),
           "activations": activations}
    return out | {"total": sum(v or 0 for v in out.values())}


def live_parameter_bytes() -> int:
    """Bytes of every parameter held by any nn.Module alive in this process."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module proxies warns
        warnings.simplefilter("ignore", FutureWarning)
        mods = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    return storage_bytes([p for m in mods for p in m.parameters(recurse=False)])


def fmt(s: dict, scale=1.0, w=7, d=3) -> str:
    """A `stats` dict as "median [min, max]", times `scale` (1e3: seconds to ms)."""
    return f"{s['median'] * scale:{w}.{d}f} [{s['min'] * scale:.{d}f}, {s['max'] * scale:.{d}f}]"
