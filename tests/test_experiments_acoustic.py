"""Tests of the acoustic experiment (`keras_kd.experiments.acoustic`, `keras-kd acoustic`)."""

import json
import wave

import numpy as np
import pytest

from keras_kd.experiments import _acoustic_tables as tables
from keras_kd.experiments import acoustic

RATE = 8000


def _write_wav(path, samples):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(np.asarray(samples, "<i2").tobytes())


@pytest.fixture
def tiny_fsdd(tmp_path):
    """An FSDD-shaped folder: 4 speakers (theo and george among them), 10 digits,
    takes 0-1, each a 0.25 s tone whose pitch tells the digit, then silence."""
    folder = tmp_path / "data" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    t = np.arange(int(0.25 * RATE)) / RATE
    for speaker_index, speaker in enumerate(("ann", "bob", "george", "theo")):
        for digit in range(10):
            for take in range(2):
                hz = 250 + 120 * digit + 15 * speaker_index
                tone = 0.5 * np.sin(2 * np.pi * hz * t)
                samples = np.concatenate([tone, np.zeros(800)])
                _write_wav(folder / f"{digit}_{speaker}_{take}.wav", 32767 * samples)
    return tmp_path / "data"


def _one_error_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("keras-kd acoustic: error:"), text
    assert "Traceback" not in text
    return lines[0]


def test_summary_ratios_are_hand_computed():
    records = {
        "member-00": {"test_frame_accuracy": 0.60, "wer": 0.1},
        "ensemble": {"test_frame_accuracy": 0.64},
        "distilled-T2": {"test_frame_accuracy": 0.63, "temperature": 2.0},
        "distilled-T5": {"test_frame_accuracy": 0.59, "temperature": 5.0},
        "fraction-hard": {"test_frame_accuracy": 0.40},
        "fraction-soft-T2": {"test_frame_accuracy": 0.55, "temperature": 2.0},
        "fraction-soft-T5": {"test_frame_accuracy": 0.45, "temperature": 5.0},
    }
    summary = tables.summarize(records)
    assert summary["ensemble_gain"] == pytest.approx(0.04)
    assert summary["gain_recovered"]["2"] == pytest.approx(0.75)
    assert summary["gain_recovered"]["5"] == pytest.approx(-0.25)
    assert summary["gap_closed"] == pytest.approx({"2": 0.75, "5": 0.25})
    # Without validation scores nothing is chosen, and one member gives no mean.
    assert "chosen_temperature" not in summary and "members" not in summary
    records["member-01"] = {"test_frame_accuracy": 0.64, "wer": 0.3}
    summary = tables.summarize(records)
    assert summary["members"]["test_frame_accuracy_mean"] == pytest.approx(0.62)
    assert summary["members"]["test_frame_accuracy_std"] == pytest.approx(0.04 / 2**0.5)
    assert summary["members"]["wer_mean"] == pytest.approx(0.2)
    assert summary["gain_recovered_vs_mean_member"]["2"] == pytest.approx(0.5)
    # (0.55 - 0.40) / (0.62 - 0.40)
    assert summary["gap_closed_vs_mean_member"]["2"] == pytest.approx(0.15 / 0.22)
    assert tables.summarize({"member-00": {"test_frame_accuracy": 0.6}}) == {}


def test_ratios_without_a_gain_to_recover_are_not_applicable():
    # The ensemble is worse than its baseline: no share of a gain can be "met".
    records = {
        "member-00": {"test_frame_accuracy": 0.60, "validation_frame_accuracy": 0.5},
        "ensemble": {"test_frame_accuracy": 0.59},
        "distilled-T2": {"test_frame_accuracy": 0.61, "temperature": 2.0,
                         "validation_frame_accuracy": 0.5},
    }  # fmt: skip
    for name, record in records.items():
        record.update(system=name, wer=0.1, train_frame_accuracy=0.9)
    summary = tables.summarize(records)
    assert summary["gain_recovered"] == {"2": None}
    text = tables.format_tables(records, summary)
    assert "recovered at T=2: n/a (no positive gap to measure against)" in text
    assert "T=2: n/a (chosen)" in text and "met" not in text


def test_temperature_is_chosen_on_validation_not_test():
    records = {
        "member-00": {"test_frame_accuracy": 0.60},
        "member-01": {"test_frame_accuracy": 0.64},
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
    }  # fmt: skip
    for name, record in records.items():
        record.update(system=f"{name} system", wer=0.1, train_frame_accuracy=0.9)
    summary = tables.summarize(records)
    assert summary["chosen_temperature"] == {"distilled": "5", "fraction": "2"}
    assert summary["at_chosen"]["gain_recovered"] == pytest.approx(-0.25)
    assert summary["at_chosen"]["gain_recovered_vs_mean_member"] == pytest.approx(-1.5)
    assert summary["at_chosen"]["gap_closed"] == pytest.approx(0.75)
    text = tables.format_tables(records, summary)
    assert "distilled-T5 system [chosen on validation]" in text
    assert "distilled-T2 system [chosen on validation]" not in text
    assert "fraction-soft-T2 system [chosen on validation]" in text
    assert (
        "T=5. Share of the ensemble's test gain recovered at T=5: -25%, target >= 80% "
        "missed by 105 points" in text
    )
    assert "closed at T=2: 75%, target >= 70% met" in text
    assert "Baseline, mean of 2 seeds (the ensemble's members) | 62.0% (sd 2.8)" in text


def test_repeats_are_averaged_before_choosing_and_ratios():
    def rec(test, val, t=None, of=None):
        r = {"test_frame_accuracy": test, "validation_frame_accuracy": val, "wer": 0.1,
             "train_frame_accuracy": 0.9, "system": "s"}  # fmt: skip
        if t is not None:
            r["temperature"] = t
        if of is not None:
            r.update(repeat_of=of, repeat=1)
        return r

    records = {
        "member-00": rec(0.60, 0.5), "member-01": rec(0.64, 0.5),
        "ensemble": rec(0.64, 0.5),
        # Seed 0 alone would pick T=2 (0.50 > 0.49); the means pick T=5 (0.49 > 0.45).
        "distilled-T2": rec(0.63, 0.50, 2.0),
        "distilled-T2-s1": rec(0.61, 0.40, 2.0, "distilled-T2"),
        "distilled-T5": rec(0.62, 0.49, 5.0),
        "distilled-T5-s1": rec(0.60, 0.49, 5.0, "distilled-T5"),
        "fraction-hard": rec(0.40, 0.3),
        "fraction-hard-s1": rec(0.44, 0.3, of="fraction-hard"),
        "fraction-soft-T2": rec(0.55, 0.4, 2.0),
        "fraction-soft-T2-s1": rec(0.53, 0.4, 2.0, "fraction-soft-T2"),
    }  # fmt: skip
    view = tables.with_seed_means(records)
    assert view["distilled-T2"]["seeds"] == 2 and "seeds" not in records["distilled-T2"]
    assert view["distilled-T2"]["test_frame_accuracy_mean"] == pytest.approx(0.62)
    summary = tables.summarize(records)
    assert summary["chosen_temperature"] == {"distilled": "5", "fraction": "2"}
    assert summary["gain_recovered"] == pytest.approx({"2": 0.5, "5": 0.25})
    # hard mean 0.42, soft mean 0.54, baseline 0.60: 0.12 / 0.18
    assert summary["gap_closed"]["2"] == pytest.approx(2 / 3)
    assert summary["seeds"] == {
        "distilled": {"2": 2, "5": 2},
        "fraction": {"hard": 2, "2": 2},
    }
    text = tables.format_tables(records, summary)
    assert tables.SEED_MEAN_COLUMN in text
    assert "62.0% / 45.0% (2 seeds)" in text


def test_defaults_are_the_recorded_recipe_and_quick_gives_way_to_options():
    settings = acoustic.settings_from_args(acoustic.build_parser().parse_args([]))
    # 0.1.0's recipe (benchmarks/results/acoustic.md): changing it changes results.
    assert settings == acoustic.Settings()
    assert (settings.hidden, settings.left, settings.right) == ((256, 256), 5, 5)
    assert (settings.epochs, settings.batch_size, settings.learning_rate) == (
        6,
        256,
        1e-3,
    )
    assert (settings.members, settings.temperatures) == (10, (1.0, 2.0, 5.0, 10.0))
    assert (settings.soft_weight, settings.fraction_soft_weight) == (0.5, 1.0)
    assert (settings.fraction, settings.fraction_epochs) == (0.03, 100)
    assert settings.fraction_temperatures == (2.0,)
    assert (settings.split, settings.normalization, settings.validation) == (
        "speaker",
        "speaker",
        "auto",
    )
    args = acoustic.build_parser().parse_args(
        ["--quick", "--hidden", "64,32", "--temperatures", "1,5", "--parts", "baseline"]
    )
    quick = acoustic.settings_from_args(args)
    assert quick.hidden == (64, 32) and quick.temperatures == (1.0, 5.0)
    assert quick.parts == ("baseline",) and quick.members == 2 and quick.max_takes == 8
    assert acoustic.resolve_validation(acoustic.Settings(split="standard")) == "takes"
    assert acoustic.resolve_validation(acoustic.Settings(validation="none")) == "none"
    with pytest.raises(ValueError, match="`fraction` must be in"):
        acoustic.Settings(fraction=2.0)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--fraction", "0"], "--fraction: expected a float > 0"),
        (["--hidden", "a"], "--hidden: expected comma-separated positive integers"),
        (["--soft-weight", "1.5"], "--soft-weight: expected a number in [0, 1]"),
        (["--alpha", "0.5"], "--alpha was renamed --soft-weight"),
        (["--normalisation", "global"], "--normalisation was renamed --normalization"),
        (["--verbose", "5"], "--verbose: invalid choice"),
        (["--parts", "baseline,nope"], "--parts: expected a comma-separated subset of"),
    ],
)
def test_parser_errors_are_one_line_and_exit_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        acoustic.main(argv)
    assert exit_info.value.code == 2
    assert expected in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--fraction", "2"], "`fraction` must be in (0, 1], got 2.0"),
        (["--left", "-1"], "`left` must be an integer >= 0, got -1"),
        (
            ["--temperatures", "2,0"],
            "`temperatures` must be one or more temperatures > 0",
        ),
    ],
)
def test_settings_out_of_range_are_one_line_and_exit_2(
    argv, expected, tmp_path, capsys
):
    assert acoustic.main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_data_and_folder_errors_are_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    argv = ["--quick", "--data-dir", str(missing), "--out", str(tmp_path / "b")]
    assert acoustic.main(argv) == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("mine")
    argv = ["--quick", "--data-dir", str(missing), "--out", str(user_folder)]
    assert acoustic.main(argv) == 2
    assert "notes.txt" in _one_error_line(capsys.readouterr().err)
    assert (user_folder / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_quick_run_reuses_refuses_other_settings_and_rebuilds_a_damaged_cache(
    tiny_fsdd, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = [
        "--quick",
        "--hidden",
        "16",
        "--data-dir",
        str(tiny_fsdd),
        "--out",
        str(out),
    ]
    assert acoustic.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    expected = {"member-00", "member-01", "ensemble", "distilled-T2", "fraction-hard",
                "fraction-soft-T2"}  # fmt: skip
    assert set(records) == expected
    for record in records.values():
        assert 0.0 <= record["test_frame_accuracy"] <= 1.0
        assert 0.0 <= record["validation_frame_accuracy"] <= 1.0
    # theo is the test speaker, george the validation speaker (takes 0-1 each).
    frames = results["summary"]["frames"]
    assert (frames["train_utterances"], frames["test_utterances"]) == (40, 20)
    assert frames["validation_utterances"] == 20
    assert records["fraction-soft-T2"]["frames"] == frames["fraction"]
    assert results["summary"]["chosen_temperature"] == {
        "distilled": "2",
        "fraction": "2",
    }
    assert results["settings"]["hidden"] == [16]
    markdown = (out / "results.md").read_text()
    assert "| 2xEnsemble |" in markdown and "## Table 5" in markdown
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "cache-ensemble" / "manifest.json").is_file()
    seconds = records["distilled-T2"]["train_seconds"]

    # A feature cache cut short (as by a kill in 0.1.0) is rebuilt, not a crash;
    # the finished models are reused as they are.
    (cache,) = (out / "features").glob("fsdd-features-*.npz")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    capsys.readouterr()
    with pytest.warns(UserWarning, match="feature cache .* is damaged"):
        assert acoustic.main(argv) == 0
    assert "] training" not in capsys.readouterr().out
    with np.load(cache) as stored:
        assert int(stored["lengths"].sum()) == len(stored["features"])
    again = json.loads((out / "results.json").read_text())["records"]
    assert again["distilled-T2"]["train_seconds"] == seconds
    assert again["distilled-T2"]["test_frame_accuracy"] == pytest.approx(
        records["distilled-T2"]["test_frame_accuracy"]
    )

    # The same folder with other settings is refused, naming what differs.
    wider = [*argv[:2], "64,64", *argv[3:]]
    assert acoustic.main(wider) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "hidden: [16] in the folder, [64, 64] now" in line
    assert acoustic.main([*argv, "--soft-weight", "0.7"]) == 2
    assert "soft_weight: 0.5 in the folder, 0.7 now" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["settings"]["hidden"] == [16]


@pytest.mark.slow
def test_quick_mode_on_real_fsdd(data_dir, tmp_path):
    out = tmp_path / "run"
    assert (
        acoustic.main(["--quick", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    )
    summary = json.loads((out / "results.json").read_text())["summary"]
    # Takes 0-7 of 6 speakers; theo is the test speaker, george the validation one.
    assert summary["frames"]["test_utterances"] == 80
    assert summary["frames"]["validation_utterances"] == 80
    assert summary["frames"]["train_utterances"] == 320
    assert summary["frames"]["fraction"] == round(0.1 * summary["frames"]["train"])
    assert summary["validation"] == "speaker"
    assert set(summary["gain_recovered"]) == {"2"} and set(summary["gap_closed"]) == {
        "2"
    }
