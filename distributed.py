"""More than one process: everything the loops need from torch.distributed, in one place.

    torchrun --nproc_per_node=K train.py --recipe ...     # K processes, one per GPU (or CPU)

`torchrun` starts K copies of the program with RANK, WORLD_SIZE and LOCAL_RANK set; `setup()`
joins them into one process group (NCCL on GPUs, gloo on CPUs) and returns a `Dist`. Run
without torchrun, `setup()` returns the one-process `Dist`, whose every method is a no-op, so
the loops read the same either way. What the loops do with it (each line marked `# dist:`):

  - a step's global batch is the same list on every rank (it derives from (seed, step)); each
    rank takes its contiguous share (`shard`), so GRPO's N draws of an utterance stay on one
    rank;
  - the classifier is wrapped in DistributedDataParallel (`wrap`): backward averages the
    gradients over the ranks; the chat loops average them with one all-reduce after backward
    (`average_gradients`); each rank's mean loss is scaled by its share (`weight_of`), so the
    average is the gradient of the global batch's mean loss even when the shares differ;
  - what needs the whole batch gathers it (`gather`): GRPO's "batch" advantages normalise by
    the mean and std of every reward of the global batch; logged statistics are averaged;
  - the classifier's dev set is scored by rank 0 alone; the chat routes' greedy answers (and
    HIR's answer log-likelihoods) are split over the ranks and gathered back (`gather_list`),
    so every rank holds the same scores and chooses the same checkpoint;
  - only rank 0 writes checkpoints, logs and tables (`is_main`); the others wait at a
    `barrier` where rank 0 must be done first.

Randomness stays a function of (seed, step, utterance position in the global batch) for crops,
augmentation and label draws, so K processes draw what one process draws for the same global
batch; dropout's stream is seeded per (seed, step, rank).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: rank r of `world` processes (1: no group at all)."""
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, end) of this rank's contiguous share of n items; shares differ by one at
        most (the first n % world ranks take one more), as numpy.array_split cuts."""
        share, extra = divmod(n, self.world)
        start = self.rank * share + min(self.rank, extra)
        return start, start + share + (self.rank < extra)

    def shard(self, items):
        """This rank's share of a global batch (a list, an array or a tensor)."""
        start, end = self.bounds(len(items))
        return items[start:end]

    def weight_of(self, local: float) -> float:
        """The factor that makes the ranks' mean losses average to the mean over all items: a
        rank whose mean loss is over `local` items (utterances, sequences or tokens) weighs
        local * world / (the sum of every rank's local); 1 with one process."""
        if self.world == 1:
            return 1.0
        total = torch.tensor(float(local), dtype=torch.float64)
        td.all_reduce(total)
        return float(local) * self.world / float(total)

    def average_gradients(self, params) -> None:
        """Data parallelism written out: every gradient averaged over the ranks with one
        all-reduce of their concatenation (what DistributedDataParallel does in buckets).
        The chat loops use it: their scoring pass runs several forwards (chunks, a shared
        prompt) before one backward, which DistributedDataParallel's reducer does not take."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        td.all_reduce(flat)
        flat /= self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel over the model's trainable parameters (K = 1: the model)."""
        if self.world == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-D tensor concatenated in rank order (lengths may differ by rank)."""
        if self.world == 1:
            return x
        return torch.cat(self.gather_list([x.detach().cpu()])).to(x.device)

    def gather_list(self, items: list) -> list:
        """Every rank's list concatenated in rank order, on every rank: after `shard`, the
        whole list again (each rank having done its share of the work)."""
        if self.world == 1:
            return items
        parts = [None] * self.world
        td.all_gather_object(parts, items)
        return [x for part in parts for x in part]

    def mean(self, stats: dict, n: int) -> dict:
        """Scalar statistics of each rank's share of n items, averaged over the global batch
        (each rank weighted by its share), for the log."""
        if self.world == 1 or not stats:
            return stats
        keys = sorted(stats)
        start, end = self.bounds(n)
        v = torch.stack([torch.as_tensor(stats[k], dtype=torch.float64).detach().cpu()
                         for k in keys]) * (end - start)
        td.all_reduce(v)
        return dict(zip(keys, (v / n).tolist()))

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. builds a corpus), the others after it (and reuse
        what it built): two processes never write the same files at once."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


_ALONE = [False]


@contextmanager
def alone():
    """Inside the block setup() answers the one-process Dist: what rank 0 builds by itself for
    the others (a stand-in model, under main_first) trains without collectives."""
    _ALONE[0] = True
    try:
        yield
    finally:
        _ALONE[0] = False


def setup() -> Dist:
    """Join the process group torchrun describes in the environment (idempotent), or return
    the one-process Dist when there is none (or inside `alone`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or _ALONE[0]:
        return Dist()
    if not td.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:  # one GPU per process
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group("nccl" if cuda else "gloo")
    return Dist(td.get_rank(), td.get_world_size())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (to save it, or to generate)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
