"""Tests of the acoustic example (`examples/acoustic/`) and its benchmark's quick mode."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(relative, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return _load("examples/acoustic/distill_acoustic.py", "distill_acoustic")


def test_summary_ratios_are_hand_computed(example):
    records = {
        "member-00": {"test_frame_accuracy": 0.60},
        "ensemble": {"test_frame_accuracy": 0.64},
        "distilled-T2": {"test_frame_accuracy": 0.63, "temperature": 2.0},
        "distilled-T5": {"test_frame_accuracy": 0.59, "temperature": 5.0},
        "fraction-hard": {"test_frame_accuracy": 0.40},
        "fraction-soft-T2": {"test_frame_accuracy": 0.55, "temperature": 2.0},
        "fraction-soft-T5": {"test_frame_accuracy": 0.45, "temperature": 5.0},
    }
    summary = example.summarise(records)
    assert summary["ensemble_gain"] == pytest.approx(0.04)
    assert summary["gain_recovered"]["2"] == pytest.approx(0.75)
    assert summary["gain_recovered"]["5"] == pytest.approx(-0.25)
    assert summary["gap_closed"] == pytest.approx({"2": 0.75, "5": 0.25})
    records["ensemble"]["mean_member_test_frame_accuracy"] = 0.62
    assert example.summarise(records)["gain_recovered_vs_mean_member"]["2"] == pytest.approx(0.5)
    assert example.summarise({"member-00": {"test_frame_accuracy": 0.6}}) == {}


def test_arguments_are_parsed_and_checked(example, capsys):
    settings = example.parse_args(["--hidden", "64,32", "--temperatures", "1,5", "--parts", "baseline"])
    assert settings.hidden == (64, 32) and settings.temperatures == (1.0, 5.0)
    assert settings.parts == ("baseline",)
    with pytest.raises(SystemExit):
        example.parse_args(["--fraction", "0"])
    assert "--fraction must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown parts"):
        example.run(example.Settings(parts=("nope",)))


def test_cli_runs_the_example(capsys):
    # `keras-kd acoustic ARGS` hands ARGS to `cli.run_example`, which runs the script.
    from keras_kd import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.run_example("acoustic", ["--help"])
    assert exit_info.value.code == 0
    assert "keras-kd acoustic" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_benchmark_runs_every_part_and_resumes(data_dir, tmp_path, capsys):
    bench = _load("benchmarks/acoustic_paper.py", "acoustic_paper")
    summary = bench.run(("speaker",), quick=True, out=tmp_path, data_dir=str(data_dir))["speaker"]
    out = tmp_path / "speaker"
    records = json.loads((out / "results.json").read_text())
    expected = {"member-00", "member-01", "ensemble", "distilled-T2", "fraction-hard", "fraction-soft-T2"}
    assert expected <= set(records)
    for name in expected:
        assert 0.0 <= records[name]["test_frame_accuracy"] <= 1.0
        assert 0.0 <= records[name]["wer"] <= 1.0
    # Takes 0-7 of 6 speakers; the held-out speaker is theo.
    assert summary["frames"]["test_utterances"] == 80
    assert summary["frames"]["train_utterances"] == 400
    assert summary["frames"]["fraction"] == round(0.1 * summary["frames"]["train"])
    assert records["fraction-soft-T2"]["frames"] == summary["frames"]["fraction"]
    assert set(summary["gain_recovered"]) == {"2"} and set(summary["gap_closed"]) == {"2"}
    tables = (out / "tables.md").read_text()
    assert "| System | Test frame accuracy | WER |" in tables
    assert "Soft targets (10% of training set, from the full-data baseline, T=2)" in tables
    assert (out / "cache-ensemble" / "manifest.json").is_file()
    trained_seconds = records["distilled-T2"]["train_seconds"]
    capsys.readouterr()
    bench.run(("speaker",), quick=True, out=tmp_path, data_dir=str(data_dir))
    assert "] training" not in capsys.readouterr().out  # every model was loaded
    again = json.loads((out / "results.json").read_text())
    assert again["distilled-T2"]["train_seconds"] == trained_seconds
