"""The MNIST example and its benchmark's quick mode, on small subsets of real MNIST."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name, relative):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


benchmark = load("mnist_paper", "benchmarks/mnist_paper.py")
example = benchmark.load_example()


def test_quick_benchmark_distillation_beats_the_scratch_student(data_dir, tmp_path):
    errors = benchmark.run_quick(
        str(data_dir), tmp_path
    )  # asserts distilled < baseline
    assert errors["distilled"] < errors["baseline"]
    assert errors["teacher"] < errors["baseline"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["test errors"] for row in saved["rows"]] == list(errors.values())
    assert saved["rows"][0]["paper"] == "67"
    for name in ("teacher", "baseline_800", "distilled_800_T20"):
        assert (tmp_path / "models" / f"{name}.keras").is_file()
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    assert "| teacher 1200-1200 |" in (tmp_path / "results.md").read_text()


def test_omitted_three_part_reports_threes_and_a_held_out_bias_shift(
    data_dir, tmp_path
):
    settings = example.Settings(
        out=tmp_path,
        data_dir=str(data_dir),
        parts=("omit3",),
        train_subset=1000,
        test_subset=500,
        heldout=200,
        teacher_epochs=1,
        student_epochs=1,
        verbose=0,
    )
    before, after = example.run(settings)
    threes = sum(
        1 for label in example.load_mnist(str(data_dir))[1][1][:500] if label == 3
    )
    # With no 3 in the transfer set, the student gets (nearly) every 3 wrong.
    assert before["errors on 3s"] >= 0.8 * threes
    assert after["errors on 3s"] <= before["errors on 3s"]
    assert after["test errors"] >= after["errors on 3s"]
    shift = float(after["model"].split("bias of [3] ")[1])
    assert shift > 0  # raising class 3's bias, chosen on the 200 held-out images


def test_rerun_loads_finished_models_instead_of_training(data_dir, tmp_path, capsys):
    settings = example.Settings(
        out=tmp_path,
        data_dir=str(data_dir),
        parts=("baseline",),
        train_subset=500,
        test_subset=200,
        student_epochs=1,
        verbose=0,
    )
    first = example.run(settings)
    second = example.run(settings)
    assert first[0]["test errors"] == second[0]["test errors"]
    assert "already trained, loading" in capsys.readouterr().out


def test_command_line_options():
    settings = example.parse_args(
        [
            "--parts",
            "teacher,omit3",
            "--epochs",
            "3",
            "--temperature",
            "2,20",
            "--out",
            "x",
        ]
    )
    assert settings.parts == ("teacher", "omit3")
    assert settings.teacher_epochs == settings.student_epochs == 3
    assert settings.temperatures == (2.0, 20.0)
    assert settings.out == Path("x")
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['bogus'\]"):
        example.run(example.Settings(out=Path("unused"), parts=("bogus",)))


def test_teacher_cache_gives_the_teachers_logits(data_dir, tmp_path):
    settings = example.Settings(
        out=tmp_path / "run",
        data_dir=str(data_dir),
        train_subset=300,
        teacher_epochs=1,
        teacher_cache=tmp_path / "cache",
        verbose=0,
    )
    experiment = example.Experiment(settings)
    # Keep the test small: the experiment's training set is just the 300 images.
    experiment.x, experiment.y = (
        experiment.x[experiment.full],
        experiment.y[experiment.full],
    )
    experiment.full = np.arange(300)
    cached = experiment.teacher_logits()
    assert (tmp_path / "cache" / "manifest.json").is_file()
    direct = experiment.teacher().predict(
        experiment.x.astype("float32") / 255.0, verbose=0
    )
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)


def test_student_jitter_runs_the_teacher_on_shifted_batches(data_dir, tmp_path):
    settings = example.Settings(
        out=tmp_path,
        data_dir=str(data_dir),
        parts=("distilled",),
        train_subset=400,
        test_subset=200,
        teacher_epochs=1,
        student_epochs=1,
        student_jitter=True,
        verbose=0,
    )
    (row,) = example.run(settings)
    assert row["transfer set"] == "400 train, jittered"
    assert (tmp_path / "models" / "distilled_800_T20_jitter.keras").is_file()
    # No precomputed logits: the live teacher provided the soft targets.
    assert not (tmp_path / "teacher_logits.npy").exists()
