"""End-to-end tests of `keras-kd distill | tune | export`, run in-process."""

import json

import keras
import numpy as np
import pytest

from keras_kd import cli, export, tuning


def blobs(n, rng):
    y = rng.integers(0, 3, n).astype("int32")
    centres = np.eye(3, 8, dtype="float32") * 3.0
    return centres[y] + rng.normal(size=(n, 8)).astype("float32"), y


def mlp(width, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(3)]
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An .npz data set, two trained teachers and an untrained student on disk."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x_train, y_train = blobs(240, rng)
    x_test, y_test = blobs(90, rng)
    np.savez(folder / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    for index in (1, 2):
        teacher = mlp(32, index)
        teacher.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
        teacher.save(folder / f"teacher{index}.keras")
    mlp(16, 3).save(folder / "student.keras")
    return folder


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_distill_with_an_ensemble_writes_student_table_and_logs(files, tmp_path, capsys):
    out = tmp_path / "distilled"
    status, stdout, _ = run(
        capsys, "distill", "--teacher", files / "teacher1.keras", "--teacher",
        files / "teacher2.keras", "--student", files / "student.keras",
        "--data", files / "data.npz", "--temperature", 3, "--soft-weight", 0.7,
        "--epochs", 8, "--batch-size", 32, "--learning-rate", 0.02,
        "--strategy", "one", "--output-dir", out,
    )
    assert status == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert results[0]["model"] == "teacher ensemble (2, geometric)"
    assert results[1]["temperature"] == 3.0 and results[1]["soft_weight"] == 0.7
    student = keras.models.load_model(out / "student.keras")
    data = np.load(files / "data.npz")
    accuracy = np.mean(student.predict(data["x_test"], verbose=0).argmax(-1) == data["y_test"])
    assert accuracy == pytest.approx(results[1]["test_accuracy"])
    assert accuracy > 0.85
    assert "| distilled student |" in (out / "results.md").read_text()
    assert "| distilled student |" in stdout
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    assert list((out / "logs" / "validation").glob("events.out.tfevents.*"))


def test_tune_runs_a_small_search(files, tmp_path, capsys):
    out = tmp_path / "tuned"
    status, stdout, _ = run(
        capsys, "tune", "--teacher", files / "teacher1.keras", "--student",
        files / "student.keras", "--data", files / "data.npz", "--max-trials", 2,
        "--temperatures", "1,4", "--soft-weights", "0.5,0.9", "--epochs", 1,
        "--batch-size", 32, "--learning-rate", 0.02, "--output-dir", out,
    )
    assert status == 0
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials["trials"]) == 2 and trials["teacher_passes"] == 1
    assert {t["temperature"] for t in trials["trials"]} <= {1.0, 4.0}
    assert (out / "best_student.keras").is_file()
    assert "teacher passes over the transfer set: 1" in stdout


def test_export_writes_formats_and_parity(files, tmp_path, capsys):
    out = tmp_path / "exported"
    status, stdout, _ = run(
        capsys, "export", "--student", files / "teacher1.keras", "--data",
        files / "data.npz", "--formats", "saved_model,tflite_float32,tflite_int8",
        "--latency-examples", 5, "--output-dir", out,
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
          "--output-dir", "{o}"], "--teacher 'missing.keras' does not exist"),
        (["distill", "--teacher", "{t}", "--student", "{d}", "--data", "{d}",
          "--output-dir", "{o}"], "is not a .keras file"),
        (["distill", "--teacher", "{t}", "--student", "{s}", "--data", "nowhere.npz",
          "--output-dir", "{o}"], "--data 'nowhere.npz' was not found"),
        (["distill", "--teacher", "{t}", "--student", "{s}", "--data", "{d}",
          "--temperature", "-1", "--output-dir", "{o}"],
         "argument --temperature: expected a float > 0, got '-1'"),
        (["tune", "--teacher", "{t}", "--student", "{s}", "--data", "{d}",
          "--temperatures", "1,hot", "--output-dir", "{o}"],
         "argument --temperatures: expected comma-separated numbers"),
        (["tune", "--teacher", "{t}", "--student", "{s}", "--data", "{d}",
          "--tuner", "grid", "--output-dir", "{o}"], "argument --tuner: invalid choice"),
        (["export", "--student", "{s}", "--data", "{d}", "--formats", "onnx",
          "--output-dir", "{o}"], "unknown format(s) ['onnx']"),
        (["export", "--student", "{s}", "--data", "{bad}", "--output-dir", "{o}"],
         "lacks the array(s) ['x_test', 'y_test']"),
        (["distill", "--student", "{s}"], "the following arguments are required"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(files, tmp_path, capsys, argv, expected):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 8)), y_train=np.zeros(2))
    names = {
        "t": files / "teacher1.keras", "s": files / "student.keras",
        "d": files / "data.npz", "o": tmp_path / "out", "bad": bad,
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
                    "--output-dir"],
        "tune": ["--tuner", "--max-trials", "--temperatures", "--soft-weights",
                 "--validation-fraction", "--strategy"],
        "export": ["--formats", "--calibration-examples", "--latency-examples"],
    }.items():
        status, stdout, _ = run(capsys, command, "--help")
        assert status == 0
        for flag in flags:
            assert flag in stdout, (command, flag)


def test_cli_names_agree_with_the_library():
    assert cli.TUNER_KINDS == tuning.TUNERS
    assert cli.EXPORT_FORMATS == export.FORMATS


def test_image_folder_data(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                image = rng.integers(0, 255, (10, 12, 3)).astype("uint8")
                keras.utils.save_img(folder / f"{index}.png", image)
    x_train, y_train, x_test, y_test = cli.load_data(
        "images", data_dir=tmp_path, image_size=(6, 8)
    )
    assert x_train.shape == (6, 6, 8, 3) and x_test.shape == (4, 6, 8, 3)
    assert sorted(y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    assert sorted(y_test.tolist()) == [0, 0, 1, 1]


def test_example_subcommands_pass_their_options_through(monkeypatch):
    seen = {}

    def fake_run_example(name, argv):
        seen[name] = argv
        return 0

    monkeypatch.setattr(cli, "run_example", fake_run_example)
    assert cli.main(["mnist", "--data-dir", "somewhere", "--parts", "teacher"]) == 0
    assert seen["mnist"] == ["--data-dir", "somewhere", "--parts", "teacher"]
