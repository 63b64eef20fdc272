"""Tests of keras_kd.experiments.specialists (`keras-kd specialists`)."""

import json

import pytest

from keras_kd.experiments import specialists as exp

# A run of a few seconds: 2,000 training pairs, one clustering, short schedules.
TINY = (
    "--train-pairs 2500 --holdout 500 --test-pairs 400 --num-subsets 6 "
    "--specialist-examples 256 --specialist-epochs 1 --generalist-epochs 1 --verbose 0"
).split()


def test_quick_changes_defaults_and_explicit_flags_still_win():
    quick = exp.parse_args(["--quick"])
    assert (quick.train_pairs, quick.specialist_epochs) == (12000, 1)
    assert exp.parse_args(["--quick", "--train-pairs", "9000"]).train_pairs == 9000
    full = exp.parse_args(["--", "--soft-weight", "0.5"])  # 0.1's `-- ...` form
    assert (full.train_pairs, full.num_subsets, full.soft_weight) == (
        60000,
        [10, 20],
        0.5,
    )
    assert not hasattr(full, "soft_target_weight")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--soft-target-weight", "0.5"], "renamed --soft-weight in keras-kd 0.2.0"),
        (["--output-dir", "runs/x"], "renamed --out in keras-kd 0.2.0"),
        (["--soft-weight", "1.5"], "expected a number in [0, 1]"),
        (["--repeats", "0"], "expected a int > 0"),
        (["--num-subsets", "0"], "positive integers"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        exp.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--train-pairs", "100", "--holdout", "100"],
            "--holdout 100 must be at least 2 and smaller than --train-pairs 100",
        ),
        (["--num-subsets", "10,101"], "--num-subsets [101] exceeds the 100 classes"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--solver-steps", "-5"], "--solver-steps must be >= 0, got -5"),
    ],
)
def test_inconsistent_options_are_refused_before_any_file_is_written(
    argv, message, tmp_path, capsys
):
    out = tmp_path / "run"
    assert exp.main([*argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_seed_rows_add_a_mean_row_for_several_seeds():
    record = {
        "generalist_accuracy": 0.5,
        "combined_accuracy": 0.6,
        "relative_gain": 0.2,
        "num_specialists": 3,
        "mean_active_specialists": 1.0,
    }
    rows = exp.summary_rows({0: record, 1: record | {"combined_accuracy": 0.7}})
    assert [row["seed"] for row in rows] == [0, 1, "mean (each seed)"]
    assert rows[-1]["with specialists (eq. 5)"] == "0.6500 (0.6000 / 0.7000)"
    assert len(exp.summary_rows({0: record})) == 1


def test_tiny_run_writes_results_reuses_models_and_refuses_other_settings(
    data_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    argv = ["--data-dir", str(data_dir), "--out", str(out), *TINY]
    assert exp.main(argv) == 0
    saved = json.loads((out / "results.json").read_text())
    record = saved["seeds"]["0"]
    assert saved["rows"][0]["with specialists (eq. 5)"] == record["combined_accuracy"]
    rows = {row["specialists covering"]: row for row in record["coverage_table"]}
    total = rows.pop("total")
    assert total["examples"] == 400 == sum(row["examples"] for row in rows.values())
    assert total["generalist_correct"] == round(400 * record["generalist_accuracy"])
    assert total["combined_correct"] == round(400 * record["combined_accuracy"])
    models = sorted(p.name for p in (out / "models").iterdir())
    specialist_runs = [name for name in models if name.startswith("specialist")]
    assert len(specialist_runs) == record["num_specialists"] >= 1
    assert {"generalist-s0", "clusters-s0", "ensemble-top2-s0"} <= set(models)
    settings = json.loads((out / "models/specialist00-s0/settings.json").read_text())
    # A specialist's fingerprint holds its generalist's and the clustering's settings.
    assert settings["hidden_units"] == 32 and settings["num_subsets"] == [6]
    assert settings["subset"] == record["clusters"]["subsets"][0]
    text = (out / "results.md").read_text()
    assert "| specialists covering | examples | generalist_correct |" in text

    # The same command reuses every model: nothing trains, same figures.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(exp, "train_generalist", no_training)
    monkeypatch.setattr(exp, "train_one_specialist", no_training)
    capsys.readouterr()
    assert exp.main(argv) == 0
    again = json.loads((out / "results.json").read_text())["seeds"]["0"]
    assert again["coverage_table"] == record["coverage_table"]

    # Another --top-n combines the saved models anew, still without training.
    assert exp.main([*argv, "--top-n", "1"]) == 0
    top1 = json.loads((out / "results.json").read_text())["seeds"]["0"]
    assert top1["mean_active_specialists"] <= record["mean_active_specialists"]
    assert top1["generalist_accuracy"] == record["generalist_accuracy"]
    models = sorted(p.name for p in (out / "models").iterdir())
    assert "ensemble-top1-s0" in models

    # Other settings with the same --out: refused, naming the setting; no new model.
    for option, value, named in (
        ("--hidden-units", "16", "hidden_units: 32 in the folder, 16 now"),
        ("--soft-weight", "0.5", "soft_weight: 0.0 in the folder, 0.5 now"),
    ):
        assert exp.main([*argv, option, value]) == 2
        error = capsys.readouterr().err.strip()
        assert named in error and len(error.splitlines()) == 1
        assert sorted(p.name for p in (out / "models").iterdir()) == models
