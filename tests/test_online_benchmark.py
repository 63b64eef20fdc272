"""benchmarks/imagenet_throughput.py --mode online --checkpoint, run as a user
runs it: saved after the epoch, reported again without training, and refused
when the command differs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _imagenet_folder import write_image_folder
from conftest import command_env

ROOT = Path(__file__).resolve().parents[1]


def _online(data, out, *extra):
    return subprocess.run(
        [sys.executable, "benchmarks/imagenet_throughput.py", "--mode", "online",
         "--quick", "--checkpoint", "--data-dir", str(data), "--out-dir", str(out),
         *extra],
        cwd=ROOT, env=command_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_a_checkpointed_run_is_reported_again_and_another_command_refused(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data, train_per_class=16, val_per_class=8, corrupt=None)
    out = tmp_path / "out"
    first = _online(data, out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "epoch 1/1 keras-kd" in first.stdout
    backup = out / "models" / "online-epochs" / "backup"
    assert sorted(path.name for path in backup.iterdir()) == [
        ".keras-kd.json", "model-0.epoch-1.weights.h5", "model-1.epoch-1.weights.h5",
        "state.json",
    ]  # fmt: skip
    rows = json.loads((out / "results.json").read_text())["rows"]

    again = _online(data, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed after epoch 1" in again.stdout
    assert "epoch 1/1" not in again.stdout  # nothing left to train
    rows_again = json.loads((out / "results.json").read_text())["rows"]
    for before, after in zip(rows, rows_again, strict=True):
        assert before["student_sha256"] == after["student_sha256"]
        assert before["epoch_s"] == after["epoch_s"]  # the saved figures

    other = _online(data, out, "--seed", "1")
    assert other.returncode != 0
    assert "--checkpoint:" in other.stderr and "seed" in other.stderr
    assert "Traceback" not in other.stderr
