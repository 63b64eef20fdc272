"""Bad inputs and faults through `keras-kd`: one line on stderr, exit 2, nothing lost.

Each test is a case of the reliability catalogue (issue 16) and fails without its
fix: a traceback, a silent result, a user's file touched, a restart from epoch 1,
or minutes of download retries.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import blobs, command_env, run_command

from keras_kd import cli

# The failures these bound took 205 s of download retries before; an idle machine
# fails in about 6 s, most of it TensorFlow's start-up.
FAIL_FAST_SECONDS = 30


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_line(capsys, *argv, command="distill"):
    """The single error line of `keras-kd ARGV` run in this process."""
    status, _, stderr = run(capsys, *argv)
    return one_error_line(status, stderr, command)


def one_error_line(status, stderr, command="distill"):
    """The single error line of a failed command."""
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"keras-kd {command}: error: ")
    return lines[0]


def distill_argv(files, data, out, *extra):
    return [
        "distill", "--teacher", files / "teacher1.keras", "--student",
        files / "student.keras", "--data", data, "--epochs", 1, "--batch-size", 64,
        "--out", out, *extra,
    ]


def refuse_expensive_work(monkeypatch):
    """Makes loading data or a model fail the test: the check must come first."""
    from keras_kd import commands, datasets, jobs

    def fail(*args, **kwargs):
        pytest.fail("expensive work started before the output folder was checked")

    monkeypatch.setattr(jobs, "load_data", fail)
    monkeypatch.setattr(datasets, "load_data", fail)
    monkeypatch.setattr(commands, "load_saved_model", fail)


def command_argv(command, files, out):
    data = files / "data.npz"
    if command == "distill":
        return distill_argv(files, data, out)
    if command == "tune":
        return ["tune", "--teacher", files / "teacher1.keras", "--student",
                files / "student.keras", "--data", data, "--out", out]
    return ["export", "--student", files / "teacher1.keras", "--data", data,
            "--out", out]


def unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        return folder / "out"
    # root writes anywhere, but not into sysfs.
    probe = Path("/sys/keras-kd-test")
    try:
        probe.mkdir()
    except PermissionError:
        return probe / "out"
    probe.rmdir()
    pytest.skip("no folder is unwritable for this user")


@pytest.mark.parametrize("command", ["distill", "tune", "export"])
@pytest.mark.parametrize("case", ["under_a_file", "a_file", "unwritable"])
def test_an_output_dir_that_cannot_be_written_is_refused_first(
    command, case, cli_files, tmp_path, capsys, monkeypatch
):
    (tmp_path / "notes.txt").write_text("mine")
    out = {
        "under_a_file": tmp_path / "notes.txt" / "out",
        "a_file": tmp_path / "notes.txt",
        "unwritable": None,
    }[case] or unwritable_folder(tmp_path)
    refuse_expensive_work(monkeypatch)
    line = error_line(capsys, *command_argv(command, cli_files, out), command=command)
    assert str(out) in line or str(out.parent) in line
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["distill", "tune", "export"])
def test_a_folder_of_the_users_is_refused_and_left_alone(command, cli_files, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = error_line(capsys, *command_argv(command, cli_files, out), command=command)
    assert "notes.txt" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_rerun_with_other_settings_is_refused_naming_them(
    cli_files, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert run(capsys, *distill_argv(cli_files, cli_files / "data.npz", out))[0] == 0
    refuse_expensive_work(monkeypatch)
    line = error_line(
        capsys, *distill_argv(cli_files, cli_files / "data.npz", out, "--soft-weight", "0.5")
    )
    assert "soft_weight: 0.9 in the folder, 0.5 now" in line


def save_data(path, **changes):
    rng = np.random.default_rng(1)
    x_train, y_train = blobs(120, rng)
    x_test, y_test = blobs(30, rng)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def nan_row(x, row=7):
    x = x.copy()
    x[row, 2] = np.nan
    return x


BAD_DATA = {
    "no_rows": (lambda x, y: {"x_train": x[:0], "y_train": y[:0]}, "x_train has no rows"),
    "lengths": (lambda x, y: {"y_train": y[:100]},
                "y_train has 100 rows but x_train has 120"),
    "label_too_big": (lambda x, y: {"y_test": np.full(30, 3)},
                      "y_test holds the label 3 (row 0), outside the 3 classes 0..2"),
    "label_negative": (lambda x, y: {"y_train": np.where(np.arange(120) == 5, -1, y)},
                       "y_train holds the label -1 (row 5)"),
    "label_strings": (lambda x, y: {"y_train": np.array(["cat", "dog", "owl"])[y]},
                      "y_train holds strings such as"),
    "label_fraction": (lambda x, y: {"y_train": np.where(np.arange(120) == 4, 3.5, y)},
                       "y_train holds the label 3.5 (row 4)"),
    "label_one_hot": (lambda x, y: {"y_train": np.eye(3)[y]}, "y_train has shape (120, 3)"),
    "one_class": (lambda x, y: {"y_train": np.zeros(120, "int32")},
                  "y_train holds only the class 0"),
    "nan_inputs": (lambda x, y: {"x_train": nan_row(x)},
                   "x_train holds NaN or infinity (first in row 7)"),
    "inf_test_inputs": (lambda x, y: {"x_test": np.full((30, 8), np.inf, "float32")},
                        "x_test holds NaN or infinity (first in row 0)"),
    "string_inputs": (lambda x, y: {"x_train": x.astype(str)}, "inputs must be numbers"),
    "wrong_width": (lambda x, y: {"x_train": x[:, :5], "x_test": np.zeros((30, 5), "float32")},
                    "holds examples of shape (5,), but the student takes inputs of shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_naming_the_file_and_array(case, cli_files, tmp_path, capsys):
    rng = np.random.default_rng(1)
    x, y = blobs(120, rng)
    change, expected = BAD_DATA[case]
    data = save_data(tmp_path / "bad.npz", **change(x, y))
    out = tmp_path / "out"
    line = error_line(capsys, *distill_argv(cli_files, data, out))
    assert expected in line
    assert "bad.npz" in line
    assert not (out / "student.keras").exists()


def test_repaired_data_can_be_distilled_into_the_same_folder(cli_files, tmp_path, capsys):
    rng = np.random.default_rng(1)
    x, _ = blobs(120, rng)
    data = save_data(tmp_path / "data.npz", x_train=nan_row(x))
    out = tmp_path / "out"
    error_line(capsys, *distill_argv(cli_files, data, out))
    save_data(data)
    status, stdout, stderr = run(capsys, *distill_argv(cli_files, data, out))
    assert status == 0, stderr
    assert (out / "student.keras").is_file()


def test_a_diverging_run_fails_without_writing_a_nan_student(cli_files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = distill_argv(cli_files, cli_files / "data.npz", out, "--learning-rate", "1e35")
    error_line(capsys, *argv)
    assert not (out / "student.keras").exists()
    assert not (out / "results.json").exists()


def write_images(root, split, label, count, rng):
    folder = root / split / label
    folder.mkdir(parents=True)
    for index in range(count):
        keras.utils.save_img(folder / f"{index}.png", rng.integers(0, 255, (10, 12, 3)).astype("uint8"))


def test_a_text_file_named_jpeg_in_an_image_folder_is_skipped_and_counted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for split, count in (("train", 6), ("test", 3)):
        for label in ("cat", "dog"):
            write_images(images, split, label, count, rng)
    (images / "train" / "cat" / "notes.JPEG").write_text("not an image")
    keras.utils.set_random_seed(0)
    for name in ("teacher", "student"):
        keras.Sequential(
            [keras.Input((6, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
        ).save(tmp_path / f"{name}.keras")
    status, _, stderr = run(
        capsys, "distill", "--teacher", tmp_path / "teacher.keras", "--student",
        tmp_path / "student.keras", "--data", images, "--image-size", 6, 8,
        "--epochs", 1, "--out", tmp_path / "out",
    )
    assert status == 0, stderr
    assert stderr.strip().splitlines() == [
        f"keras-kd distill: note: 1 of 13 files under {str(images / 'train')!r} could "
        "not be decoded as images and were skipped (cat/notes.JPEG)."
    ]
    assert (tmp_path / "out" / "student.keras").is_file()


def test_distill_resumes_after_a_kill_and_ends_as_an_uninterrupted_run(
    cli_files, tmp_path, capsys
):
    epochs = 30
    argv = [
        "distill", "--teacher", cli_files / "teacher1.keras", "--student",
        cli_files / "student.keras", "--data", cli_files / "data.npz",
        "--epochs", epochs, "--batch-size", 64,
    ]
    killed = tmp_path / "killed"
    history = killed / "models" / "student" / "history.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_kd.cli", *map(str, argv), "--out", str(killed)],
        env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (history.exists() and len(json.loads(history.read_text())) >= 3):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not reach epoch 3"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    done_before = len(json.loads(history.read_text()))
    assert done_before < epochs
    status, stdout, stderr = run(capsys, *argv, "--out", killed)
    assert status == 0, stderr
    first_epoch = int(stdout.split("Epoch ", 1)[1].split("/", 1)[0])
    assert first_epoch > 1, "the rerun started again from epoch 1"
    records = json.loads((killed / "results.json").read_text())["history"]
    assert [r["epoch"] for r in records][-1] == epochs
    status, _, stderr = run(capsys, *argv, "--out", tmp_path / "whole")
    assert status == 0, stderr
    resumed = keras.models.load_model(killed / "student.keras").get_weights()
    whole = keras.models.load_model(tmp_path / "whole" / "student.keras").get_weights()
    for a, b in zip(resumed, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_another_keras_backend_is_one_line_for_commands_and_imports(tmp_path):
    result = run_command(["demo"], env=command_env(KERAS_BACKEND="jax"), timeout=120)
    line = one_error_line(result.returncode, result.stderr, "demo")
    assert line == (
        "keras-kd demo: error: keras-kd needs the TensorFlow backend of Keras, but "
        "KERAS_BACKEND is 'jax'. Set KERAS_BACKEND=tensorflow (before Keras is "
        "imported) to use keras-kd."
    )
    imported = subprocess.run(
        [sys.executable, "-c", "import keras_kd"], env=command_env(KERAS_BACKEND="jax"),
        capture_output=True, text=True, timeout=120,
    )
    assert imported.returncode == 1
    assert "ModuleNotFoundError" not in imported.stderr
    assert imported.stderr.strip().splitlines()[-1] == (
        "ImportError: keras-kd needs the TensorFlow backend of Keras, but KERAS_BACKEND "
        "is 'jax'. Set KERAS_BACKEND=tensorflow (before Keras is imported) to use keras-kd."
    )


def test_keras_imported_with_another_backend_is_named(monkeypatch):
    import types

    import keras_kd

    fake = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "torch"))
    monkeypatch.setitem(sys.modules, "keras", fake)
    assert keras_kd._backend_problem() == (
        "keras-kd needs the TensorFlow backend of Keras, but Keras was already "
        "imported with the backend 'torch'. Set KERAS_BACKEND=tensorflow (before "
        "Keras is imported) to use keras-kd."
    )
    with pytest.raises(ImportError, match="already imported with the backend 'torch'"):
        keras_kd._import_public_api()


@pytest.fixture(scope="module")
def fail_fast_bound(cli_files, tmp_path_factory):
    """Seconds a failing command may take here: 30, or twice what a command that
    fails right after TensorFlow's start-up takes on this (maybe loaded) machine."""
    start = time.monotonic()
    result = run_command(
        ["distill", "--teacher", cli_files / "teacher1.keras", "--student",
         cli_files / "student.keras", "--data", "missing.npz", "--out",
         tmp_path_factory.mktemp("baseline") / "out"],
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    return max(FAIL_FAST_SECONDS, 2 * (time.monotonic() - start))


def test_tfds_data_that_is_not_prepared_fails_in_seconds(cli_files, tmp_path, fail_fast_bound):
    empty = tmp_path / "data"
    empty.mkdir()
    (tmp_path / "home").mkdir()
    start = time.monotonic()
    result = run_command(
        ["distill", "--teacher", cli_files / "teacher1.keras", "--student",
         cli_files / "student.keras", "--data", "tfds:mnist", "--data-dir", empty,
         "--out", tmp_path / "out"],
        env=command_env(HOME=str(tmp_path / "home"), KERAS_KD_DATA_DIR=None),
        timeout=300,
    )
    seconds = time.monotonic() - start
    line = one_error_line(result.returncode, result.stderr)
    assert "tfds:mnist could not be loaded without downloading" in line
    assert seconds < fail_fast_bound
    assert list(empty.iterdir()) == []


def test_mnist_without_data_fails_in_seconds(tmp_path, fail_fast_bound):
    import importlib.util

    if importlib.util.find_spec("keras_kd.experiments.mnist") is None:
        pytest.skip("keras_kd.experiments.mnist is not written yet")
    (tmp_path / "home").mkdir()
    start = time.monotonic()
    result = run_command(
        ["mnist", "--quick", "--out", tmp_path / "out"],
        env=command_env(HOME=str(tmp_path / "home"), KERAS_KD_DATA_DIR=None),
        cwd=tmp_path, timeout=600,
    )
    seconds = time.monotonic() - start
    one_error_line(result.returncode, result.stderr, "mnist")
    assert seconds < fail_fast_bound, f"took {seconds:.0f} s (download retries?)"



def test_verbose_shows_the_traceback_above_the_one_line(capsys):
    from keras_kd import commands

    def body():
        raise ValueError("the data is bad")

    assert commands.run_reporting_errors("distill", body) == 2
    assert capsys.readouterr().err == "keras-kd distill: error: the data is bad\n"
    assert commands.run_reporting_errors("distill", body, traceback=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and 'raise ValueError("the data is bad")' in err
    assert err.endswith("keras-kd distill: error: the data is bad\n")
