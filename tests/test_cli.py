"""`keras-kd`: the subcommands end to end, its quiet start-up and its public surface."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import command_env, run_command

import keras_kd
from keras_kd import cli, commands, export, jobs, tuning
from keras_kd.datasets import load_data, read_image_folder


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_distill_with_an_ensemble_writes_student_table_and_logs(cli_files, tmp_path, capsys):
    out = tmp_path / "distilled"
    status, stdout, _ = run(
        capsys, "distill", "--teacher", cli_files / "teacher1.keras", "--teacher",
        cli_files / "teacher2.keras", "--student", cli_files / "student.keras",
        "--data", cli_files / "data.npz", "--temperature", 3, "--soft-weight", 0.7,
        "--epochs", 8, "--batch-size", 32, "--learning-rate", 0.02,
        "--strategy", "one", "--out", out,
    )
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert rows[0]["model"] == "teacher ensemble (2, geometric)"
    assert rows[1]["temperature"] == 3.0 and rows[1]["soft_weight"] == 0.7
    assert [epoch["epoch"] for epoch in results["history"]] == list(range(1, 9))
    student = keras.models.load_model(out / "student.keras")
    data = np.load(cli_files / "data.npz")
    accuracy = np.mean(student.predict(data["x_test"], verbose=0).argmax(-1) == data["y_test"])
    assert accuracy == pytest.approx(rows[1]["test_accuracy"])
    assert accuracy > 0.85
    assert "| distilled student |" in (out / "results.md").read_text()
    assert "| distilled student |" in stdout
    assert (out / "curves.png").is_file()
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    assert list((out / "logs" / "validation").glob("events.out.tfevents.*"))


def test_distill_rerun_of_a_finished_run_reports_it_without_training(
    cli_files, tmp_path, capsys, monkeypatch
):
    argv = [
        "distill", "--teacher", cli_files / "teacher1.keras", "--student",
        cli_files / "student.keras", "--data", cli_files / "data.npz", "--epochs", 1,
        "--batch-size", 64, "--out", tmp_path / "run",
    ]
    assert run(capsys, *argv)[0] == 0
    monkeypatch.setattr(jobs, "load_data", lambda *a: pytest.fail("data reloaded"))
    status, stdout, _ = run(capsys, *argv)
    assert status == 0
    assert "holds this finished run already" in stdout
    assert "| distilled student |" in stdout


def test_tune_runs_a_small_search(cli_files, tmp_path, capsys):
    out = tmp_path / "tuned"
    status, stdout, _ = run(
        capsys, "tune", "--teacher", cli_files / "teacher1.keras", "--student",
        cli_files / "student.keras", "--data", cli_files / "data.npz", "--max-trials", 2,
        "--temperatures", "1,4", "--soft-weights", "0.5,0.9", "--epochs", 1,
        "--batch-size", 32, "--learning-rate", 0.02, "--out", out,
    )
    assert status == 0
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials["trials"]) == 2 and trials["teacher_passes"] == 1
    assert {t["temperature"] for t in trials["trials"]} <= {1.0, 4.0}
    assert (out / "best_student.keras").is_file()
    assert "teacher passes over the transfer set: 1" in stdout


def test_export_writes_formats_and_parity(cli_files, tmp_path, capsys):
    out = tmp_path / "exported"
    status, stdout, _ = run(
        capsys, "export", "--student", cli_files / "teacher1.keras", "--data",
        cli_files / "data.npz", "--formats", "saved_model,tflite_float32,tflite_int8",
        "--latency-examples", 5, "--out", out,
    )
    assert status == 0
    rows = {r["format"]: r for r in json.loads((out / "parity.json").read_text())["exports"]}
    assert set(rows) == {"saved_model", "tflite_float32", "tflite_int8"}
    assert rows["tflite_float32"]["top1_agreement"] == 1.0
    assert rows["tflite_float32"]["max_abs_logit_diff"] < 1e-4
    assert (out / "student_int8.tflite").is_file()
    assert "| tflite_int8 |" in stdout


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["distill", "--teacher", "missing.keras", "--student", "{s}", "--data", "{d}",
          "--out", "{o}"], "--teacher 'missing.keras' does not exist"),
        (["distill", "--teacher", "{t}", "--student", "{d}", "--data", "{d}",
          "--out", "{o}"], "is not a .keras file"),
        (["distill", "--teacher", "{t}", "--student", "{s}", "--data", "nowhere.npz",
          "--out", "{o}"], "'nowhere.npz' was not found"),
        (["distill", "--teacher", "{t}", "--student", "{s}", "--data", "{d}",
          "--temperature", "-1", "--out", "{o}"],
         "argument --temperature: expected a float > 0, got '-1'"),
        (["tune", "--teacher", "{t}", "--student", "{s}", "--data", "{d}",
          "--temperatures", "1,hot", "--out", "{o}"],
         "argument --temperatures: expected comma-separated numbers"),
        (["tune", "--teacher", "{t}", "--student", "{s}", "--data", "{d}",
          "--tuner", "grid", "--out", "{o}"], "argument --tuner: invalid choice"),
        (["export", "--student", "{s}", "--data", "{d}", "--formats", "onnx",
          "--out", "{o}"],
         "argument --formats: expected a comma-separated subset of saved_model,"),
        (["export", "--student", "{s}", "--data", "{bad}", "--out", "{o}"],
         "lacks the array(s) ['x_test', 'y_test']"),
        (["distill", "--student", "{s}"], "the following arguments are required"),
        (["demo", "--epochs", "0"], "argument --epochs: expected a int > 0"),
        (["distill", "--alpha", "0.5"], "--alpha was renamed --soft-weight in keras-kd 0.2.0"),
        (["tune", "--alphas", "0.5"], "--alphas was renamed --soft-weights in keras-kd 0.2.0"),
        (["demo", "--alpha", "0.5"], "--alpha was renamed --soft-weight in keras-kd 0.2.0"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(cli_files, tmp_path, capsys, argv, expected):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 8)), y_train=np.zeros(2))
    names = {
        "t": cli_files / "teacher1.keras", "s": cli_files / "student.keras",
        "d": cli_files / "data.npz", "o": tmp_path / "out", "bad": bad,
    }
    status, _, stderr = run(capsys, *[a.format(**names) for a in argv])
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("keras-kd ")
    assert expected in lines[0]


def test_help_of_each_subcommand_is_complete(capsys):
    for command, flags in {
        "distill": ["--teacher", "--ensemble-mean", "--student", "--data", "--data-dir",
                    "--temperature", "--soft-weight", "--epochs", "--batch-size", "--strategy",
                    "--out"],
        "tune": ["--tuner", "--max-trials", "--temperatures", "--soft-weights",
                 "--validation-fraction", "--strategy"],
        "export": ["--formats", "--calibration-examples", "--latency-examples"],
        "demo": ["--epochs", "--temperature", "--soft-weight", "--seed"],
    }.items():
        status, stdout, _ = run(capsys, command, "--help")
        assert status == 0
        for flag in flags:
            assert flag in stdout, (command, flag)
    status, stdout, _ = run(capsys, "--help")
    assert status == 0
    for name in ("demo", "distill", "tune", "export", *cli.EXPERIMENTS, "--verbose"):
        assert name in stdout


def test_version(capsys):
    assert run(capsys, "--version") == (0, f"keras-kd {keras_kd.__version__}\n", "")


def test_cli_names_agree_with_the_library():
    assert cli.TUNER_KINDS == tuning.TUNERS
    assert cli.EXPORT_FORMATS == export.FORMATS
    assert cli.STRATEGIES == tuple(jobs.STRATEGY_NAMES)


def test_experiment_subcommands_hand_their_arguments_to_the_experiment(monkeypatch):
    seen = {}

    def fake_run_experiment(name, argv):
        seen[name] = argv
        return 0

    monkeypatch.setattr(cli, "run_experiment", fake_run_experiment)
    assert cli.main(["mnist", "--data-dir", "somewhere", "--parts", "teacher"]) == 0
    assert cli.main(["--verbose", "imagenet", "--quick"]) == 0
    assert seen == {
        "mnist": ["--data-dir", "somewhere", "--parts", "teacher"],
        "imagenet": ["--quick"],
    }


def test_a_missing_experiment_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.EXPERIMENTS, "nosuch", "an experiment that does not exist")
    status, _, stderr = run(capsys, "nosuch", "--help")
    assert status == 2
    assert stderr.strip() == (
        f"keras-kd nosuch: error: this installation of keras-kd {keras_kd.__version__} "
        "lacks keras_kd.experiments.nosuch; reinstall keras-kd."
    )


def test_image_folder_data(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                image = rng.integers(0, 255, (10, 12, 3)).astype("uint8")
                keras.utils.save_img(folder / f"{index}.png", image)
    x_train, y_train, x_test, y_test = load_data("images", data_dir=tmp_path, image_size=(6, 8))
    assert x_train.shape == (6, 6, 8, 3) and x_test.shape == (4, 6, 8, 3)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 255
    # The same pixels as the package's one image reader gives, in float32.
    read = read_image_folder(tmp_path / "images" / "train", (6, 8))
    np.testing.assert_array_equal(x_train, read.images.astype(np.float32))
    assert x_train.std() > 10  # random pixels, not a blank or constant image
    assert sorted(y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    assert sorted(y_test.tolist()) == [0, 0, 1, 1]


def test_every_public_name_resolves():
    for name in keras_kd.__all__:
        assert getattr(keras_kd, name) is not None, name
    for name in ("runs", "evaluation", "models", "datasets"):
        assert name in keras_kd.__all__
    assert "files" not in keras_kd.__all__
    assert keras_kd.datasets.load_data is load_data


def test_help_does_not_start_tensorflow():
    # `-X importtime` lists every module imported, on stderr.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_kd.cli", "--help"],
        env=command_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "keras_kd.commands" in imported
    assert not {"tensorflow", "keras"} & imported


def test_distill_prints_no_tensorflow_start_up_lines(cli_files, tmp_path):
    args = [
        "distill", "--teacher", cli_files / "teacher1.keras", "--student",
        cli_files / "student.keras", "--data", cli_files / "data.npz", "--epochs", 1,
        "--batch-size", 64,
    ]
    quiet = run_command([*args, "--out", tmp_path / "quiet"])
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert "| distilled student |" in quiet.stdout
    verbose = run_command(["--verbose", *args, "--out", tmp_path / "verbose"])
    assert verbose.returncode == 0, verbose.stderr
    assert "| distilled student |" in verbose.stdout
    # --verbose shows what the quiet run hid: TensorFlow 2.21's start-up records.
    shown = verbose.stderr.splitlines(keepends=True)
    assert commands._filter_native_log(shown, threshold=4) != shown


@pytest.mark.parametrize(
    "threshold, kept",
    [(0, ["notice", "I", "more", "W", "E", "plain"]), (1, ["W", "E", "plain"]),
     (2, ["E", "plain"]), (3, ["plain"])],
)
def test_start_up_lines_are_hidden_by_level(threshold, kept):
    lines = {
        "notice": "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I": "I0000 00:00:1795704249.472195   12605 cpu_feature_guard.cc:227] This TensorFlow binary\n",
        "more": "To enable the following instructions: AVX2 FMA, in other operations\n",
        "W": "W0000 00:00:1795704249.5   12605 port.cc:10] a warning\n",
        "E": "E0000 00:00:1795704254.529460   12605 cuda_platform.cc:52] failed call to cuInit\n",
        "plain": "a line of the program's own\n",
    }
    assert commands._filter_native_log(list(lines.values()), threshold) == [
        lines[name] for name in kept
    ]


def test_importing_the_library_leaves_tensorflow_logging_alone():
    result = subprocess.run(
        [sys.executable, "-c", "import os, keras_kd; "
         "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), keras_kd.Distiller.__name__)"],
        env=command_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "Distiller"]


def test_distill_identifies_models_and_data_by_content_not_by_file(cli_files, tmp_path, capsys):
    """A model saved again (a new save time in the archive) or moved is the same
    model; the same folder name in another data folder is other data."""
    import time

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(tmp_path / "first.keras")
    time.sleep(1.1)  # the archive records the save time
    model.save(tmp_path / "again.keras")
    assert (tmp_path / "first.keras").read_bytes() != (tmp_path / "again.keras").read_bytes()
    first = jobs._model_identity(tmp_path / "first.keras")
    assert jobs._model_identity(tmp_path / "again.keras") == first
    assert jobs._model_identity(cli_files / "student.keras") != first
    for root, pixel in (("a", 0), ("b", 255)):
        for label in ("cat", "dog"):
            folder = tmp_path / root / "imgs" / label
            folder.mkdir(parents=True)
            (folder / "x.png").write_bytes(bytes([pixel]))
    a = jobs._data_identity("imgs", tmp_path / "a")
    b = jobs._data_identity("imgs", tmp_path / "b")
    assert a != b and a["folder"].endswith("a/imgs")
    assert jobs._data_identity("tfds:mnist", tmp_path / "a") != jobs._data_identity(
        "tfds:mnist", tmp_path / "b"
    )
