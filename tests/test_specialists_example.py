"""The two-digit MNIST specialists example, end to end on a tiny configuration."""

import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parent.parent / "examples/specialists/specialists_mnist.py"


def _example():
    spec = importlib.util.spec_from_file_location("specialists_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_digit_images_put_the_digits_side_by_side():
    example = _example()
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    x, y = example.two_digit_mnist(images, np.array([7, 1, 4]), 50, seed=0)
    assert x.shape == (50, 28, 56) and y.dtype == np.int32
    for image, label in zip(x, y):
        left = [i for i in range(3) if np.array_equal(images[i], image[:, :28])]
        right = [i for i in range(3) if np.array_equal(images[i], image[:, 28:])]
        assert label == 10 * [7, 1, 4][left[0]] + [7, 1, 4][right[0]]


def test_tiny_run_writes_consistent_results_and_resumes(data_dir, tmp_path):
    example = _example()
    argv = [
        "--data-dir", str(data_dir), "--output-dir", str(tmp_path),
        "--train-pairs", "2500", "--holdout", "500", "--test-pairs", "400",
        "--num-subsets", "6", "--specialist-examples", "256",
        "--specialist-epochs", "1", "--generalist-epochs", "1", "--verbose", "0",
    ]
    first = example.run(example.parse_args(argv))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["combined_accuracy"] == first["combined_accuracy"]
    rows = {row["specialists covering"]: row for row in first["coverage_table"]}
    total = rows.pop("total")
    assert total["examples"] == 400
    assert sum(row["examples"] for row in rows.values()) == 400
    assert total["generalist_correct"] == round(400 * first["generalist_accuracy"])
    assert total["combined_correct"] == round(400 * first["combined_accuracy"])
    assert len(list(tmp_path.glob("specialist_*.keras"))) == first["num_specialists"]
    assert "| specialists covering |" in (tmp_path / "results.md").read_text()
    # A second call loads every model instead of training: identical figures.
    second = example.run(example.parse_args(argv))
    assert second["coverage_table"] == first["coverage_table"]
