"""rawvid train under torchrun: two gloo processes on the CPU train like one, write once, and resume."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_train import small_dataset  # noqa: F401 - the module fixture

from rawvid.model import load_model

ARGS = ("--arch", "tiny", "--steps", "20", "--batch", "4", "--crop", "32", "--unroll", "3", "--val-every", "20",
        "--val-frames", "4", "--save-every", "10", "--device", "cpu", "--codec-prob", "0")


def _train(data, out, procs: int, *extra: str) -> list[dict]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs > 1 else [sys.executable]
    res = subprocess.run([*launcher, "-m", "rawvid", "train", str(data / "train"), "-o", str(out), *ARGS, *extra],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return [json.loads(line) for line in (out / "train.log.jsonl").read_text().splitlines()]


def _losses(log: list[dict]) -> dict[int, float]:
    return {d["step"]: d["loss"] for d in log if d["event"] == "step"}


@pytest.mark.parametrize("procs", [2])
def test_two_processes_train_like_one(small_dataset, tmp_path, procs):  # noqa: F811
    one = _train(small_dataset, tmp_path / "one", 1)
    two = _train(small_dataset, tmp_path / "two", procs)
    # one writer: one start event, every step logged once, the model card says how it was trained
    starts = [d for d in two if d["event"] == "start"]
    assert len(starts) == 1 and starts[0]["processes"] == procs
    assert sorted(_losses(two)) == sorted(_losses(one)) == [10, 20]
    data = next(d for d in two if d["event"] == "data")
    assert data["processes"] == procs
    card = (tmp_path / "two" / "MODEL_CARD.md").read_text()
    assert f"{procs} processes (torchrun, DistributedDataParallel, batch {4 // procs} each)" in card
    # the same recipe on a different split of the same batch: the loss curve has the same shape
    l1, l2 = _losses(one), _losses(two)
    assert l2[20] < l2[10] and l1[20] < l1[10]
    assert abs(l2[20] / l2[10] - l1[20] / l1[10]) < 0.25
    assert 0.7 < l2[20] / l1[20] < 1.4
    # resume under torchrun: every process starts from rank 0's checkpoint
    more = _train(small_dataset, tmp_path / "two", procs, "--steps", "30")
    assert {"event": "resumed", "step": 20} in more
    assert sorted(_losses(more)) == [10, 20, 30]
    model = load_model(str(tmp_path / "two" / "final.safetensors"))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_batch_must_split_evenly(small_dataset, tmp_path):  # noqa: F811
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "rawvid", "train", str(small_dataset / "train"), "-o", str(tmp_path / "r"), "--arch", "tiny",
                          "--steps", "2", "--batch", "3", "--crop", "32", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--batch 3 must be a multiple of the 2 training processes" in res.stderr
