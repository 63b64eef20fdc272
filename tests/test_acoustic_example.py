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
        "member-00": {"test_frame_accuracy": 0.60, "wer": 0.1},
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
    # Without validation scores nothing is chosen, and one member gives no mean.
    assert "chosen_temperature" not in summary and "members" not in summary
    records["member-01"] = {"test_frame_accuracy": 0.64, "wer": 0.3}
    summary = example.summarise(records)
    assert summary["members"]["test_frame_accuracy_mean"] == pytest.approx(0.62)
    assert summary["members"]["test_frame_accuracy_std"] == pytest.approx(0.04 / 2**0.5)
    assert summary["members"]["wer_mean"] == pytest.approx(0.2)
    assert summary["gain_recovered_vs_mean_member"]["2"] == pytest.approx(0.5)
    # (0.55 - 0.40) / (0.62 - 0.40)
    assert summary["gap_closed_vs_mean_member"]["2"] == pytest.approx(0.15 / 0.22)
    assert example.summarise({"member-00": {"test_frame_accuracy": 0.6}}) == {}


def test_temperature_is_chosen_on_validation_not_test(example):
    records = {
        "member-00": {"test_frame_accuracy": 0.60, "wer": 0.1},
        "member-01": {"test_frame_accuracy": 0.64, "wer": 0.1},
        "ensemble": {"test_frame_accuracy": 0.64},
        # T=2 is best on test, T=5 on validation: T=5 must be chosen.
        "distilled-T2": {"test_frame_accuracy": 0.63, "temperature": 2.0,
                         "validation_frame_accuracy": 0.50},
        "distilled-T5": {"test_frame_accuracy": 0.59, "temperature": 5.0,
                         "validation_frame_accuracy": 0.52},
        # A tie on validation goes to the lower temperature.
        "distilled-T10": {"test_frame_accuracy": 0.70, "temperature": 10.0,
                          "validation_frame_accuracy": 0.52},
        "fraction-hard": {"test_frame_accuracy": 0.40},
        "fraction-soft-T2": {"test_frame_accuracy": 0.55, "temperature": 2.0,
                             "validation_frame_accuracy": 0.45},
        "fraction-soft-T5": {"test_frame_accuracy": 0.45, "temperature": 5.0,
                             "validation_frame_accuracy": 0.41},
    }
    for name in ("member-00", "member-01", "ensemble", "fraction-hard"):
        records[name].update(system=name, wer=0.1, train_frame_accuracy=0.9)
    for name, record in records.items():
        if "temperature" in record:
            record.update(system=f"{name} system", wer=0.1, train_frame_accuracy=0.9)
    summary = example.summarise(records)
    assert summary["chosen_temperature"] == {"distilled": "5", "fraction": "2"}
    assert summary["at_chosen"]["gain_recovered"] == pytest.approx(-0.25)
    assert summary["at_chosen"]["gain_recovered_vs_mean_member"] == pytest.approx(-1.5)
    assert summary["at_chosen"]["gap_closed"] == pytest.approx(0.75)
    tables = example.format_tables(records, summary)
    assert "distilled-T5 system [chosen on validation]" in tables
    assert "distilled-T2 system [chosen on validation]" not in tables
    assert "fraction-soft-T2 system [chosen on validation]" in tables
    assert "T=5. Share of the ensemble's test gain recovered at T=5: -25%, target >= 80% missed by 105 points" in tables
    assert "closed at T=2: 75%, target >= 70% met" in tables
    assert "Baseline, mean of 2 seeds (the ensemble's members) | 62.0% (sd 2.8)" in tables


def test_repeats_are_averaged_before_choosing_and_ratios(example):
    def rec(test, val, t=None, of=None):
        r = {"test_frame_accuracy": test, "validation_frame_accuracy": val, "wer": 0.1,
             "train_frame_accuracy": 0.9, "system": "s"}
        if t is not None:
            r["temperature"] = t
        if of is not None:
            r.update(repeat_of=of, repeat=1)
        return r

    records = {
        "member-00": rec(0.60, 0.5), "member-01": rec(0.64, 0.5), "ensemble": rec(0.64, 0.5),
        # Seed 0 alone would pick T=2 (0.50 > 0.49); the means pick T=5 (0.49 > 0.45).
        "distilled-T2": rec(0.63, 0.50, 2.0), "distilled-T2-s1": rec(0.61, 0.40, 2.0, "distilled-T2"),
        "distilled-T5": rec(0.62, 0.49, 5.0), "distilled-T5-s1": rec(0.60, 0.49, 5.0, "distilled-T5"),
        "fraction-hard": rec(0.40, 0.3), "fraction-hard-s1": rec(0.44, 0.3, of="fraction-hard"),
        "fraction-soft-T2": rec(0.55, 0.4, 2.0),
        "fraction-soft-T2-s1": rec(0.53, 0.4, 2.0, "fraction-soft-T2"),
    }
    view = example.with_seed_means(records)
    assert view["distilled-T2"]["seeds"] == 2 and "seeds" not in records["distilled-T2"]
    assert view["distilled-T2"]["test_frame_accuracy_mean"] == pytest.approx(0.62)
    summary = example.summarise(records)
    assert summary["chosen_temperature"] == {"distilled": "5", "fraction": "2"}
    assert summary["gain_recovered"] == pytest.approx({"2": 0.5, "5": 0.25})
    # hard mean 0.42, soft mean 0.54, baseline 0.60: 0.12 / 0.18
    assert summary["gap_closed"]["2"] == pytest.approx(2 / 3)
    assert summary["seeds"] == {"distilled": {"2": 2, "5": 2}, "fraction": {"hard": 2, "2": 2}}
    tables = example.format_tables(records, summary)
    assert "Test / validation frame accuracy, mean over seeds" in tables
    assert "62.0% / 45.0% (2 seeds)" in tables


def test_validation_defaults_follow_the_split(example):
    settings = example.Settings(split="speaker")
    assert example.resolve_validation(settings) == "speaker"
    assert example.resolve_validation(example.Settings(split="standard")) == "takes"
    assert example.resolve_validation(example.Settings(validation="none")) == "none"
    parsed = example.parse_args(["--validation", "takes", "--validation-speakers", "a,b"])
    assert parsed.validation == "takes" and parsed.validation_speakers == ("a", "b")
    assert example.parse_args(["--repeats", "3"]).repeats == 3


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
    # Takes 0-7 of 6 speakers; theo is the test speaker, george the validation one.
    assert summary["frames"]["test_utterances"] == 80
    assert summary["frames"]["validation_utterances"] == 80
    assert summary["frames"]["train_utterances"] == 320
    assert summary["validation"] == "speaker"
    for name in expected - {"ensemble"}:
        assert 0.0 <= records[name]["validation_frame_accuracy"] <= 1.0
    assert summary["chosen_temperature"] == {"distilled": "2", "fraction": "2"}
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
    # The same folder with other data settings is refused, not silently reused.
    example = sys.modules["distill_acoustic"]
    settings = example.Settings(
        data_dir=str(data_dir), out=str(out), split="speaker", validation="takes",
        **bench.QUICK,
    )
    with pytest.raises(ValueError, match=r"other data settings \(\['validation'\]\)"):
        example.run(settings)
