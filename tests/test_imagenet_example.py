"""The ImageNet example end to end, a few steps, on real JPEG files and on tfds' mock."""

import json
import runpy
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from _imagenet_folder import write_image_folder

SCRIPT = (
    Path(__file__).resolve().parents[1]
    / "examples"
    / "imagenet"
    / "distill_imagenet.py"
)
TINY = [
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--teacher",
    "mobilenetv2",
    "--teacher-width",
    "0.35",
    "--student-width",
    "0.35",
    "--verbose",
    "2",
    "--warmup-epochs",
    "0.5",
]


def example_main():
    return runpy.run_path(str(SCRIPT))["main"]


@pytest.mark.slow
def test_example_on_a_jpeg_folder_with_a_corrupt_file(tmp_path, capsys):
    write_image_folder(tmp_path / "data", corrupt="val")
    out = tmp_path / "run"
    rows = example_main()(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--out-dir",
            str(out),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--teacher-weights",
            "scratch",
            "--save-freq",
            "1",
            *TINY,
        ]
    )
    printed = capsys.readouterr().out
    assert [row["model"] for row in rows] == [
        "teacher mobilenetv2",
        "student mobilenetv2 x0.35 (distill)",
    ]
    for row in rows:
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
    # 3 classes x 2 decodable validation images; the corrupt one is counted.
    assert "1 of 7 in validation" in printed
    assert (
        "BatchNormalization momentum 0.99 in 52 layers (Keras built [0.999])" in printed
    )
    assert "strategy=default replicas=1" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_val_images"] == 1
    history = json.loads((out / "history.json").read_text())
    assert len(history["teacher"]) == 1 and "val_top1" in history["student-distill"][0]
    assert list((out / "tensorboard" / "student-distill").rglob("events.out.tfevents*"))
    assert (out / "results.md").read_text().count("| teacher mobilenetv2 |") == 1
    student = keras.saving.load_model(out / "student.keras")
    assert student.output_shape == (None, 3)
    metadata = json.loads(
        (
            out / "backup" / "student-distill" / "worker-0" / "training_metadata.json"
        ).read_text()
    )
    assert metadata["step"] == 2


@pytest.mark.slow
def test_example_on_tfds_mock_imagenet2012_mirrored_in_scratch_mode(tmp_path, capsys):
    args = ["--source", "tfds", "--out-dir", str(tmp_path / "run"), "--epochs", "1"]
    args += ["--steps-per-epoch", "2", "--mode", "scratch", "--strategy", "mirrored"]
    with tfds.testing.mock_data(num_examples=8):
        rows = example_main()([*args, *TINY])
    printed = capsys.readouterr().out
    # Two logical CPUs (conftest): 4 images per replica, 8 global, lr scaled.
    assert "strategy=mirrored replicas=2" in printed
    assert "batch=4/replica -> 8 global, lr=0.003125" in printed
    assert "1000 classes" in printed
    assert len(rows) == 1 and rows[0]["model"].endswith("(scratch)")
    assert np.isfinite(rows[0]["top1"]) and rows[0]["top5"] >= rows[0]["top1"]
    metadata = json.loads(
        (
            tmp_path
            / "run"
            / "backup"
            / "student-scratch"
            / "worker-0"
            / "training_metadata.json"
        ).read_text()
    )
    assert metadata["step"] == 2


def test_example_rejects_a_missing_teacher_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--teacher-weights"):
        example_main()(["--teacher-weights", str(tmp_path / "nope.h5")])
