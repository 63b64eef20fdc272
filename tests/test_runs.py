"""The run layer: settings fingerprints, reuse, refusal, locking, results."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_kd import files, runs


def _model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_finished_model_is_reused_only_with_the_same_settings(tmp_path):
    settings = {"soft_weight": 0.9, "hidden": [16], "epochs": 2}
    with runs.RunFolder(tmp_path / "out") as folder:
        run = folder.model("distilled", settings)
        assert not run.finished
        model = _model()
        run.finish(model, {"test_errors": 7})
    with runs.RunFolder(tmp_path / "out") as folder:
        again = folder.model("distilled", dict(settings))
        assert again.finished and again.record == {"test_errors": 7}
        np.testing.assert_array_equal(
            again.load().get_weights()[0], model.get_weights()[0]
        )
        with pytest.raises(runs.RunSettingsError) as error:
            folder.model("distilled", {**settings, "soft_weight": 0.1})
    message = str(error.value)
    assert "soft_weight: 0.9 in the folder, 0.1 now" in message
    assert "hidden" not in message  # only the differing setting is named


def test_settings_are_recorded_before_training_so_a_partial_run_is_checked(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        folder.model("teacher", {"epochs": 100})  # started, never finished
        with pytest.raises(runs.RunSettingsError, match="epochs: 100 in the folder, 50"):
            folder.model("teacher", {"epochs": 50})


def test_a_new_setting_counts_as_a_difference(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        folder.model("m", {"a": 1})
        with pytest.raises(runs.RunSettingsError, match="b: not set in the folder, 2"):
            folder.model("m", {"a": 1, "b": 2})


def test_tuples_and_lists_are_the_same_setting(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        folder.model("m", {"hidden": (64, 64)})
        folder.model("m", {"hidden": [64, 64]})


def test_finish_removes_the_training_backup_only(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        assert not folder.has_model("m")
        run = folder.model("m", {})
        assert folder.has_model("m")
        run.backup_dir.mkdir()
        (run.backup_dir / "epoch-000003.npz").write_bytes(b"state")
        run.finish(_model(), {"errors": 1})
    assert not run.backup_dir.exists()
    assert sorted(p.name for p in run.folder.iterdir()) == [
        runs.MODEL_FILE, runs.RECORD_FILE, runs.SETTINGS_FILE,
    ]


def test_get_or_train_trains_once(tmp_path):
    calls = []

    def train(run):
        calls.append(run.name)
        return _model(), {"accuracy": 0.5}

    for _ in range(2):
        with runs.RunFolder(tmp_path) as folder:
            _, record = folder.model("m", {"x": 1}).get_or_train(train)
            assert record == {"accuracy": 0.5}
    assert calls == ["m"]


def test_a_folder_with_user_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(files.FolderNotOwnedError, match="notes.txt"):
        runs.RunFolder(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_second_live_process_is_refused_and_a_stale_lock_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with runs.RunFolder(tmp_path):
            pass
        (tmp_path / runs.LOCK_FILE).write_text(f"{sleeper.pid}\n")
        with pytest.raises(runs.RunFolderBusyError, match=str(sleeper.pid)):
            runs.RunFolder(tmp_path).__enter__()
    finally:
        sleeper.kill()
        sleeper.wait()
    with runs.RunFolder(tmp_path):  # the holder is dead: taken over
        assert (tmp_path / runs.LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / runs.LOCK_FILE).exists()


def test_a_lock_whose_pid_was_reused_by_another_process_is_stale(tmp_path):
    with runs.RunFolder(tmp_path):
        pass
    # This process is alive, but did not start at tick 1: the pid was reused.
    (tmp_path / runs.LOCK_FILE).write_text(f"{os.getppid()} 1\n")
    with runs.RunFolder(tmp_path):
        pass


def test_bad_run_names_are_refused(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        for name in ("", "../escape", ".hidden", "a/b"):
            with pytest.raises(ValueError, match="plain file names"):
                folder.model(name, {})


def test_unfinished_model_cannot_be_loaded(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        run = folder.model("m", {})
        with pytest.raises(FileNotFoundError, match="not finished"):
            _ = run.record
        with pytest.raises(FileNotFoundError, match="train it"):
            run.load()


def test_results_are_written_as_markdown_json_and_png(tmp_path):
    rows = [{"model": "teacher", "test errors": 67}, {"model": "student", "test errors": 74}]
    with runs.RunFolder(tmp_path) as folder:
        paths = folder.write_results(
            rows, title="MNIST", notes="Paper: 67 and 74.", curves={"teacher": [90, 80, 67]}
        )
    text = paths["markdown"].read_text()
    assert text.startswith("# MNIST\n\n| model | test errors |")
    assert "| student | 74 |" in text and text.rstrip().endswith("Paper: 67 and 74.")
    payload = json.loads(paths["json"].read_text())
    assert payload["rows"] == rows and payload["curves"] == {"teacher": [90, 80, 67]}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    # Nothing but our own files: no temporary leftovers.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [files.OWNER_FILE, "results.md", "results.json", "curves.png"]
    )


def test_seed_summary():
    summary = runs.seed_summary([59.44, 61.58])
    assert summary.mean == pytest.approx(60.51)
    assert summary.spread == pytest.approx(2.14)
    assert summary.std == pytest.approx(np.std([59.44, 61.58], ddof=1))
    assert summary.format() == "60.51 (59.44 / 61.58)"
    assert runs.seed_summary([1.0]).format(1) == "1.0"


def test_settings_that_are_not_json_are_refused(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        with pytest.raises(TypeError, match="JSON values"):
            folder.model("m", {"optimizer": object()})


def test_get_or_measure_measures_once_then_reuses_the_record_with_one_line(tmp_path, capsys):
    calls = []

    def measure(run):
        calls.append(run.name)
        (run.folder / "trace.txt").write_text("a measurement's own file")
        return {"date": "2025-01-02", "per_second": 812.5, "sizes": (1, 2)}

    for _ in range(2):
        with runs.RunFolder(tmp_path) as folder:
            run = folder.model("bench", {"batch_size": 64})
            record = run.get_or_measure(measure)
            assert record == {"date": "2025-01-02", "per_second": 812.5, "sizes": [1, 2]}
    assert calls == ["bench"]
    assert not run.model_path.exists() and (run.folder / "trace.txt").exists()
    assert capsys.readouterr().out.splitlines() == [
        f"[bench] measured earlier with these settings (2025-01-02): reusing "
        f"{run.folder / runs.RECORD_FILE} (use another output folder to measure again)"
    ]


def test_get_or_measure_refuses_a_record_that_is_not_a_mapping(tmp_path):
    with runs.RunFolder(tmp_path) as folder:
        run = folder.model("bench", {})
        with pytest.raises(TypeError, match="as a mapping .* got list"):
            run.get_or_measure(lambda run: [812.5])
        assert not run.finished
