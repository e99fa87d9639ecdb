"""torch.distributed (DDP) on the CPU with gloo: K = 2 processes compute what one process with
the whole global batch computes, and rank 0 alone writes files."""
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import distributed
import train
from models import SSLClassifier
from synth_speech import make_speech_corpora
from train_classifier import AudioSet, ClassifierConfig, finetune

WRITERS = ("save_checkpoint", "save_config", "write_report")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(root):
    index = make_speech_corpora(root, seed=0, size="quick", annotate=False)
    spec = lambda n: dict(kind=index[n]["kind"], path=index[n]["path"],  # noqa: E731
                          audio_dir=index[n]["audio_dir"], name=n)
    return AudioSet(spec("target_train"), 16000), AudioSet(spec("target_dev"), 16000)


def _rank(rank, world, port, root, cfg, method, start):
    """One torchrun-like process: the env torchrun sets, then the loop as it runs."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    writes = []
    for name in WRITERS:  # record every file-writing call this rank makes
        original = getattr(train, name)
        setattr(train, name, lambda *a, _f=original, _n=name, **k: (writes.append(_n),
                                                                     _f(*a, **k))[1])
    train_set, dev_set = _sets(root / "corpus")
    finetune(cfg, method, Path(cfg.out_dir), train_set, dev_set, start)
    (root / f"writes{rank}.txt").write_text("\n".join(writes))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method, batch_size, extra", [
    ("sft", 4, {}),
    ("grpo", 5, dict(beta=0.04, adv_scale="batch", old_refresh=2)),  # shares of 3 and 2
])
def test_two_processes_equal_one_process(tmp_path, method, batch_size, extra):
    make_speech_corpora(tmp_path / "corpus", seed=0, size="quick", annotate=False)
    start = tmp_path / "start"
    SSLClassifier.tiny_logmel(seed=2).save_pretrained(start)
    # lr 1e-4: Adam's first steps move every weight by about lr whatever its gradient, so
    # float rounding (the batch is cut and padded differently) must stay far below 1e-5
    base = dict(batch_size=batch_size, steps=3, eval_every=3, lr=1e-4, num_generations=8,
                train_min_sec=0.5, train_max_sec=0.7, device="cpu", model="tiny-logmel", **extra)
    one = ClassifierConfig(out_dir=str(tmp_path / "one"), **base)
    finetune(one, method, tmp_path / "one", *_sets(tmp_path / "corpus"), str(start))
    two = ClassifierConfig(out_dir=str(tmp_path / "two"), **base)
    mp.spawn(_rank, args=(2, _free_port(), tmp_path, two, method, str(start)), nprocs=2)
    a = SSLClassifier.load(tmp_path / "one" / "last" / "model").state_dict()
    b = SSLClassifier.load(tmp_path / "two" / "last" / "model").state_dict()
    s = SSLClassifier.load(start).state_dict()
    assert a.keys() == b.keys()
    assert max((a[k] - s[k]).abs().max() for k in a) > 2e-4  # the 3 steps did move the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    # rank 0 wrote the config, the checkpoint; rank 1 wrote nothing
    assert set((tmp_path / "writes0.txt").read_text().split()) == {"save_config",
                                                                   "save_checkpoint"}
    assert (tmp_path / "writes1.txt").read_text() == ""
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in rows if '"loss"' in r]) == 3  # one row a step, not one a rank


def test_shares_and_weights_of_uneven_batches():
    # 5 items over 2 ranks: [0, 3) and [3, 5); the mean losses weigh 6/5 and 4/5, so
    # (w0 * mean0 + w1 * mean1) / 2 is the mean over all 5
    d0, d1 = distributed.Dist(0, 2), distributed.Dist(1, 2)
    assert (d0.bounds(5), d1.bounds(5)) == ((0, 3), (3, 5))
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    mean = (d0.weight(5) * d0.shard(x).mean() + d1.weight(5) * d1.shard(x).mean()) / 2
    assert float(mean) == pytest.approx(float(x.mean()))
    assert distributed.Dist().shard(x) is x or torch.equal(distributed.Dist().shard(x), x)
