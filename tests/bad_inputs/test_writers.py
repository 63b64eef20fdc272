"""Writers that must never delete or overwrite a user's file (issue 16):
export, tuning and the JSON/PNG report writers.

Every test here failed before its fix: a user's SavedModel was deleted by an
export, a user's `trials.md` or KerasTuner project was overwritten or removed
by a search, or a failed write left a truncated file.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_FEATURES

from keras_kd import export, files, reports, tuning
from keras_kd.files import OWNER_FILE, FolderNotOwnedError

FEATURES = TINY_FEATURES


def _x(n=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype("float32")


def _tree(folder: Path) -> dict:
    """Every file under `folder` with its bytes (sub-folders included)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _users_saved_model(folder: Path) -> Path:
    """What `model.export(folder / "saved_model")` leaves, as far as names go."""
    saved = folder / "saved_model"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"the user's model")
    (saved / "variables" / "variables.index").write_bytes(b"the user's weights")
    return saved


# Export: a folder is adopted only when it provably is a keras-kd export.


def test_export_refuses_a_folder_holding_the_users_saved_model(tiny_student, tmp_path, no_conversion):
    out = tmp_path / "out"
    _users_saved_model(out)
    before = _tree(out)
    with pytest.raises(
        FolderNotOwnedError,
        match=r"^`output_dir`: .*already holds files keras-kd did not write \(saved_model\)",
    ):
        export.export_student(tiny_student, out, x_test=_x(), formats=["saved_model"])
    assert _tree(out) == before
    assert not (out / OWNER_FILE).exists()


def test_export_refuses_export_names_whose_parity_json_is_not_keras_kds(
    tiny_student, tmp_path, no_conversion
):
    out = tmp_path / "out"
    _users_saved_model(out)
    (out / "parity.md").write_text("my notes")
    # A keras-kd-looking parity.json that does not list the SavedModel proves
    # nothing about it; nor does a parity.json of another layout.
    for payload in (
        {"exports": [{"format": "tflite_float32", "path": "x/student_float32.tflite",
                      "top1_agreement": 1.0}]},
        {"saved_model": "mine"},
    ):
        (out / "parity.json").write_text(json.dumps(payload))
        before = _tree(out)
        with pytest.raises(FolderNotOwnedError, match="did not write"):
            export.export_student(tiny_student, out, x_test=_x(), formats=["saved_model"])
        assert _tree(out) == before


def test_export_checks_its_folder_with_the_shared_write_probe(
    tiny_student, tmp_path, monkeypatch, no_conversion
):
    # `os.access` says yes to root for folders root cannot write (a read-only
    # mount, an immutable folder); the shared check tries to create a file.
    monkeypatch.setattr(files, "_writable", lambda folder: False)
    with pytest.raises(FolderNotOwnedError, match=r"^`output_dir`: Cannot write to"):
        export.export_student(tiny_student, tmp_path / "out", x_test=_x())
    assert not (tmp_path / "out").exists()


# Tuning: its folders are claimed, its files written whole.


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype("int32")
    x = (np.eye(3, FEATURES, dtype="float32") * 3)[y] + rng.normal(size=(n, FEATURES))
    return x.astype("float32"), y


def _hypermodel():
    return tuning.DistillationHyperModel(
        lambda width: keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(3)]),
        temperatures=(2.0,),
    )


def _teacher():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(3)])


def _search(tuner, output_dir):
    x, y = _blobs(48, 0)
    return tuning.search_temperature(
        tuner, _teacher(), x, y, validation_data=_blobs(24, 1), epochs=1,
        batch_size=16, output_dir=output_dir,
    )


def test_search_refuses_an_output_dir_holding_the_users_trials_md_before_any_trial(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "trials.md").write_text("my own trial notes")
    tuner = tuning.make_tuner("random", _hypermodel(), max_trials=1, directory=tmp_path / "tuner")
    with pytest.raises(
        FolderNotOwnedError, match=r"^`output_dir`: .*did not write \(trials\.md\)"
    ):
        _search(tuner, out)
    assert _tree(out) == {"trials.md": b"my own trial notes"}
    assert not tuner.oracle.trials


def test_make_tuner_never_removes_a_project_folder_it_did_not_create(tmp_path):
    # KerasTuner's overwrite=True removes directory/project_name outright.
    users = tmp_path / "experiments"
    (users / "distillation").mkdir(parents=True)
    (users / "distillation" / "notes.txt").write_text("mine")
    with pytest.raises(
        FolderNotOwnedError, match=r"^`directory`: .*did not write \(distillation\)"
    ):
        tuning.make_tuner("random", _hypermodel(), directory=users, overwrite=True)
    assert _tree(users) == {"distillation/notes.txt": b"mine"}


@pytest.mark.parametrize("name", ["..", "../elsewhere", ""])
def test_make_tuner_refuses_a_project_name_that_leaves_its_directory(tmp_path, name):
    with pytest.raises(ValueError, match="`project_name` must be a plain folder name"):
        tuning.make_tuner("random", _hypermodel(), directory=tmp_path / "t", project_name=name)
    assert not (tmp_path / "t").exists()


def test_search_files_are_whole_and_every_folder_layout_works(tmp_path, monkeypatch):
    # The `keras-kd tune` layout: the job claims the folder, the tuner lives in it.
    job = files.claim_folder(tmp_path / "job", kind="tune")
    first = _search(tuning.make_tuner("random", _hypermodel(), max_trials=1,
                                      directory=job / "tuner"), job)
    assert first.paths["student"] == job / "best_student.keras"
    # The module docstring's layout: one folder for both.
    _search(tuning.make_tuner("random", _hypermodel(), max_trials=1,
                              directory=tmp_path / "both"), tmp_path / "both")
    # A new output folder holding only the tuner's claimed folder.
    _search(tuning.make_tuner("random", _hypermodel(), max_trials=1,
                              directory=tmp_path / "parent" / "tuner"), tmp_path / "parent")

    before = (job / "best_student.keras").read_bytes()

    def save_half(self, path, *args, **kwargs):
        Path(path).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", save_half)
    with pytest.raises(OSError, match="disk full"):
        _search(tuning.make_tuner("random", _hypermodel(), max_trials=1,
                                  directory=job / "tuner"), job)
    assert (job / "best_student.keras").read_bytes() == before
    assert not [p.name for p in job.iterdir() if p.name.endswith((".partial", ".keras"))
                and p.name != "best_student.keras"]


# Reports.


def test_write_json_that_fails_midway_leaves_the_previous_file(tmp_path, monkeypatch):
    path = reports.write_json(tmp_path / "summary.json", {"accuracy": np.float32(0.5)})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    real_write_text = Path.write_text

    def write_half(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", write_half)
    with pytest.raises(OSError, match="disk full"):
        reports.write_json(path, {"accuracy": 0.9, "rows": list(range(100))})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
