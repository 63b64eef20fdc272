"""Whole-or-nothing writes and removing only what keras-kd wrote."""

import numpy as np
import pytest

from keras_kd import files


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "record.json"
    files.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as partial:
            partial.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_atomic_path_keeps_the_suffix_writers_need(tmp_path):
    with files.atomic_path(tmp_path / "logits.npy") as partial:
        assert partial.suffix == ".npy" and partial.parent == tmp_path
        np.save(partial, np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), np.arange(3))


def test_atomic_path_gives_keras_save_weights_the_name_it_requires(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    target = tmp_path / "model-0.epoch-2.weights.h5"
    with files.atomic_path(target) as partial:
        assert partial.name.endswith(".weights.h5") and partial.parent == tmp_path
        model.save_weights(partial)
    again = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    again.load_weights(target)
    for saved, loaded in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_atomic_write_json_writes_numpy_values(tmp_path):
    path = files.atomic_write_json(tmp_path / "a.json", {"n": np.int64(3), "v": np.ones(2)})
    assert path.read_text() == '{\n  "n": 3,\n  "v": [\n    1.0,\n    1.0\n  ]\n}\n'


def test_claim_folder_refuses_user_files_and_names_them(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "shard-notes.npy").write_bytes(b"mine")
    with pytest.raises(files.FolderNotOwnedError, match="manifest.json, shard-notes.npy"):
        files.claim_folder(tmp_path, kind="teacher-cache")
    assert (tmp_path / "shard-notes.npy").read_bytes() == b"mine"


def test_claim_folder_adopts_allowed_files_and_refuses_another_kind(tmp_path):
    (tmp_path / "shard-00000.npy").write_bytes(b"")
    files.claim_folder(tmp_path, kind="teacher-cache", allowed=lambda n: n.startswith("shard-"))
    assert files.owns(tmp_path, "teacher-cache")
    with pytest.raises(files.FolderNotOwnedError, match="'teacher-cache' folder, not a 'run'"):
        files.claim_folder(tmp_path, kind="run")


def test_claim_folder_refuses_a_file_and_a_path_under_a_file(tmp_path):
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    with pytest.raises(files.FolderNotOwnedError, match="is a file"):
        files.claim_folder(regular, kind="export")
    with pytest.raises(files.FolderNotOwnedError, match="file.txt is a file"):
        files.claim_folder(regular / "out" / "deeper", kind="export")
    assert not (tmp_path / "out").exists()


def test_check_claimable_creates_nothing_and_refuses_what_cannot_be_written(tmp_path):
    target = tmp_path / "a" / "b"
    assert files.check_claimable(target, kind="export") == target
    assert not (tmp_path / "a").exists()
    # /proc cannot take new files, even for root (os.access would say yes).
    with pytest.raises(files.FolderNotOwnedError, match="Cannot write to /proc"):
        files.check_claimable("/proc/keras-kd-export", kind="export")


def test_remove_owned_removes_only_inside_our_folders(tmp_path):
    ours = files.claim_folder(tmp_path / "cache", kind="teacher-cache")
    (ours / "shard-00000.npy").write_bytes(b"")
    assert files.remove_owned(ours, "teacher-cache", ["shard-00000.npy", "gone.npy"]) == [
        ours / "shard-00000.npy"
    ]
    with pytest.raises(files.FolderNotOwnedError, match="Refusing to remove"):
        files.remove_owned(ours, "teacher-cache", ["../escape"])
    with pytest.raises(files.FolderNotOwnedError, match="Refusing to remove"):
        files.remove_owned(ours, "teacher-cache", [files.OWNER_FILE])
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "a.npy").write_bytes(b"mine")
    with pytest.raises(files.FolderNotOwnedError, match="not a keras-kd"):
        files.remove_owned(theirs, "teacher-cache", ["a.npy"])
    assert (theirs / "a.npy").exists()
