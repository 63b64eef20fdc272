"""`keras-kd mnist` (keras_kd.experiments.mnist) on small subsets of real MNIST."""

import json

import keras
import numpy as np
import pytest

from keras_kd.datasets.mnist import load_mnist, mnist_dataset
from keras_kd.experiments import _epochs, mnist
from keras_kd.models import mlp

# A few seconds per model: tiny nets on 300 training images.
TINY = [
    "--train-subset", "300", "--test-subset", "200", "--batch-size", "50",
    "--teacher-hidden", "32,32", "--student-hidden", "16,16",
    "--teacher-epochs", "4", "--student-epochs", "2", "--heldout", "60",
    "--verbose", "0",
]  # fmt: skip


class Killed(Exception):
    """Stands for the process being killed."""


def _weights(path):
    return keras.models.load_model(path).get_weights()


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_quick_mode_distillation_beats_the_scratch_student(data_dir, tmp_path):
    out = tmp_path / "quick"
    assert mnist.main(["--quick", "--out", str(out)]) == 0
    rows = _results(out)["rows"]
    errors = {row["model"]: int(row["test errors"]) for row in rows}
    assert list(errors) == [
        "teacher 1200-1200",
        "800-800 hard labels",
        "800-800 distilled",
    ]
    teacher, scratch, distilled = errors.values()
    assert distilled < scratch and teacher < scratch
    assert [row["paper"] for row in rows] == ["67", "146", "74"]
    assert (out / "curves.png").stat().st_size > 0
    assert "| teacher 1200-1200 |" in (out / "results.md").read_text()


def test_rerun_reuses_finished_models(data_dir, tmp_path, capsys):
    args = [*TINY, "--parts", "teacher,baseline", "--seeds", "0,1"]
    args += ["--out", str(tmp_path)]
    assert mnist.main(args) == 0
    model = tmp_path / "models" / "baseline-s0" / "model.keras"
    written = model.stat().st_mtime_ns
    first = _results(tmp_path)["rows"]
    # Two seeds: the mean, then each seed's figure.
    models = _results(tmp_path)["models"]
    each = [models[f"baseline-s{seed}"]["test_errors"] for seed in (0, 1)]
    assert first[1]["test errors"] == (
        f"{np.mean(each):.1f} ({each[0]:.1f} / {each[1]:.1f})"
    )
    capsys.readouterr()
    assert mnist.main(args) == 0
    output = capsys.readouterr().out
    assert "[teacher] finished earlier: reusing" in output
    assert "[baseline-s0] finished earlier: reusing" in output
    assert "[baseline-s1] finished earlier: reusing" in output
    assert "training on" not in output
    assert model.stat().st_mtime_ns == written
    assert _results(tmp_path)["rows"] == first


def test_other_soft_weight_is_refused_naming_it(data_dir, tmp_path, capsys):
    args = [*TINY, "--parts", "distilled", "--out", str(tmp_path)]
    assert mnist.main([*args, "--soft-weight", "0.9"]) == 0
    capsys.readouterr()
    assert mnist.main([*args, "--soft-weight", "0.1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("keras-kd mnist: error:")
    assert "distilled_T20-s0" in error
    assert "soft_weight: 0.9 in the folder, 0.1 now" in error
    assert _results(tmp_path)["rows"][0]["soft weight"] == "0.9"


def test_changed_teacher_setting_reuses_no_student(data_dir, tmp_path, capsys):
    args = [*TINY, "--parts", "distilled", "--out", str(tmp_path)]
    assert mnist.main(args) == 0
    student = json.loads(
        (tmp_path / "models" / "distilled_T20-s0" / "settings.json").read_text()
    )
    # The student's fingerprint holds its teacher's settings and its data subset.
    assert student["teacher_epochs"] == 4
    assert student["teacher_dropout"] == 0.3
    assert student["train_images"] == 300 and len(student["train_digest"]) == 16
    capsys.readouterr()
    assert mnist.main([*args, "--teacher-dropout", "0.5"]) == 2
    error = capsys.readouterr().err
    assert "'distilled_T20-s0'" in error
    assert "teacher_dropout: 0.3 in the folder, 0.5 now" in error


def test_killed_teacher_resumes_to_the_weights_of_an_uninterrupted_run(
    data_dir, tmp_path, monkeypatch
):
    args = [*TINY, "--parts", "teacher", "--teacher-heldout", "50"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert mnist.main([*args, "--out", str(whole)]) == 0

    save = _epochs.EpochBackup.save

    def killed_before_backup_3(self, model, epoch, keep=()):
        if epoch == 3:
            raise Killed
        save(self, model, epoch, keep)

    monkeypatch.setattr(_epochs.EpochBackup, "save", killed_before_backup_3)
    with pytest.raises(Killed):
        mnist.main([*args, "--out", str(resumed)])
    teacher = resumed / "models" / "teacher"
    assert not (teacher / "record.json").exists()
    # The curve was written while the run went, epoch by epoch.
    curve = json.loads((teacher / "curve.json").read_text())
    assert [entry["epoch"] for entry in curve["entries"]] == [1, 2, 3]
    monkeypatch.undo()

    assert mnist.main([*args, "--out", str(resumed)]) == 0
    assert json.loads((teacher / "record.json").read_text())["resumed_from_epoch"] == 2
    for a, b in zip(
        _weights(whole / "models" / "teacher" / "model.keras"),
        _weights(teacher / "model.keras"),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    entries = [
        json.loads((folder / "models" / "teacher" / "curve.json").read_text())[
            "entries"
        ]
        for folder in (whole, resumed)
    ]
    timeless = [
        [{k: v for k, v in entry.items() if "seconds" not in k} for entry in curve]
        for curve in entries
    ]
    assert timeless[0] == timeless[1]
    assert not list((teacher / "backup").glob("epoch-*.npz"))  # cleared when done


def test_epoch_resume_equals_one_plain_fit_of_a_dropout_net(tmp_path):
    """The resumable loop is Keras' own `fit` (0.1.0's recipe), epoch for epoch."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 28, 28)).astype("uint8")
    y = rng.integers(0, 10, 200)

    def trainer():
        keras.utils.set_random_seed(0)
        model = mlp((28, 28), (16,), 10, dropout=0.5, input_dropout=0.2)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
        data = mnist_dataset(x, y, batch_size=50, shuffle=True, jitter=True, seed=0)
        return model, data

    plain, data = trainer()
    plain.fit(data, epochs=3, verbose=0)
    for stop in (1, 3):  # stopped after epoch 1, then resumed to 3
        model, data = trainer()
        _epochs.fit_epochs(
            model,
            data,
            epochs=stop,
            backup_dir=tmp_path / "backup",
            curve_path=tmp_path / "curve.json",
            verbose=0,
        )
    for a, b in zip(plain.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_curves_record_heldout_and_test_errors_and_select_the_best_epoch(
    data_dir, tmp_path
):
    args = [*TINY, "--parts", "teacher", "--teacher-heldout", "50"]
    assert mnist.main([*args, "--select-epoch", "heldout", "--out", str(tmp_path)]) == 0
    teacher = tmp_path / "models" / "teacher"
    curve = json.loads((teacher / "curve.json").read_text())
    assert curve["heldout_images"] == 50 and curve["test_images"] == 200
    entries = curve["entries"]
    assert [entry["epoch"] for entry in entries] == [1, 2, 3, 4]
    assert all({"loss", "heldout_errors", "test_errors"} <= set(e) for e in entries)
    best = min(entries, key=lambda e: (e["heldout_errors"], e["epoch"]))
    record = json.loads((teacher / "record.json").read_text())
    assert record["selected_epoch"] == best["epoch"]
    (row,) = _results(tmp_path)["rows"]
    assert row["held-out errors"] == str(best["heldout_errors"])
    assert row["test errors"] == str(best["test_errors"])
    curves = _results(tmp_path)["curves"]
    assert curves["teacher held-out"] == [
        100 * e["heldout_errors"] / 50 for e in entries
    ]
    assert len(curves["teacher test"]) == 4
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_small_students_choose_on_heldout(data_dir, tmp_path):
    args = [
        *TINY, "--parts", "small", "--small-widths", "8", "--small-temperatures",
        "2,8", "--small-soft-weights", "0.5,0.9", "--small-student-epochs", "1",
        "--out", str(tmp_path),
    ]  # fmt: skip
    assert mnist.main(args) == 0
    rows = _results(tmp_path)["rows"]
    assert [row["model"].split(" (")[0] for row in rows] == [
        "8-8 hard labels",
        "8-8 distilled",
        "8-8 distilled",
    ]
    assert sum("best T on held-out" in row["model"] for row in rows) == 1
    assert all("held-out choice" in row["soft weight"] for row in rows[1:])
    models = _results(tmp_path)["models"]
    assert len(models) == 1 + 1 + 4  # teacher, scratch, 2 T x 2 soft weights
    for row in rows[1:]:  # the soft weight with fewer held-out errors is chosen
        t, chosen = row["T"], row["soft weight"].split(" ")[0]
        errors = {
            w: models[f"small8_T{t}_sw{w}_lr0.001-s0"]["heldout_errors"]
            for w in ("0.5", "0.9")
        }
        assert errors[chosen] == min(errors.values())
        assert row["held-out errors"] == str(errors[chosen])


def test_omitted_threes_get_a_bias_shift_chosen_on_heldout(data_dir, tmp_path):
    args = [
        *TINY, "--parts", "omit3", "--train-subset", "1000", "--heldout", "200",
        "--test-subset", "500", "--teacher-hidden", "128,128", "--student-hidden",
        "64,64", "--student-epochs", "4", "--out", str(tmp_path),
    ]  # fmt: skip
    assert mnist.main(args) == 0
    before, after = _results(tmp_path)["rows"]
    threes = int(np.sum(load_mnist(str(data_dir))[1][1][:500] == 3))
    # With no 3 in the transfer set, the student gets (nearly) every 3 wrong.
    assert int(before["errors on 3s"]) >= 0.8 * threes
    assert int(after["errors on 3s"]) <= int(before["errors on 3s"])
    assert float(after["bias shift"]) > 0
    assert (tmp_path / "models" / "omit3_bias-s0" / "model.keras").is_file()


def test_a_damaged_logits_file_is_computed_again(data_dir, tmp_path):
    args = [*TINY, "--parts", "distilled", "--out", str(tmp_path)]
    assert mnist.main(args) == 0
    (logits,) = (tmp_path / "models" / "teacher").glob("logits-*.npy")
    good = np.load(logits)
    logits.write_bytes(logits.read_bytes()[:100])  # e.g. a disk that filled up
    assert mnist.main([*args, "--temperatures", "4"]) == 0
    np.testing.assert_array_equal(np.load(logits), good)


def test_student_jitter_runs_the_teacher_on_shifted_batches(data_dir, tmp_path):
    args = [*TINY, "--parts", "distilled", "--student-jitter", "--out", str(tmp_path)]
    assert mnist.main(args) == 0
    (row,) = _results(tmp_path)["rows"]
    assert row["transfer set"] == "300 train, jittered"
    assert (tmp_path / "models" / "distilled_T20_jitter-s0" / "model.keras").is_file()
    # No precomputed logits: the live teacher gave the soft targets.
    assert not list((tmp_path / "models" / "teacher").glob("logits-*.npy"))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "-1"], "--epochs: expected a int > 0, got '-1'"),
        (["--parts", "teacher,bogus"], "--parts: expected a comma-separated subset"),
        (["--alpha", "0.9"], "--alpha was renamed --soft-weight"),
        (["--teacher-dropout", "1"], "--teacher-dropout: expected a number in [0, 1)"),
        (["--seeds", "0,-1"], "--seeds: expected comma-separated integers >= 0"),
        (["--teacher-optimizer", "rmsprop"], "--teacher-optimizer: invalid choice"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(argv, expected, capsys):
    assert mnist.main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("keras-kd mnist: error:")
    assert expected in error


def test_held_out_of_every_image_is_a_clear_error(data_dir, tmp_path, capsys):
    args = [*TINY, "--parts", "teacher", "--teacher-heldout", "300"]
    assert mnist.main([*args, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "--teacher-heldout 300 holds out every one of the 300" in error


def test_help_lists_the_options_and_returns_0(capsys):
    assert mnist.main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "--teacher-heldout",
        "--soft-weight",
        "--small-soft-weights",
        "--seeds",
    ):
        assert option in text
    assert "--quick" in text


def test_settings_from_options():
    args = mnist.build_parser().parse_args(
        ["--quick", "--epochs", "3", "--teacher-epochs", "7", "--max-norm", "0",
         "--temperature", "2,20", "--seeds", "0,1"]
    )  # fmt: skip
    settings = mnist.settings_from_args(args)
    assert (settings.teacher_epochs, settings.student_epochs) == (7, 3)
    assert settings.max_norm is None
    assert settings.temperatures == (2.0, 20.0)
    assert settings.student_seeds == (0, 1)
    assert settings.train_subset == 1000  # from --quick
    with pytest.raises(ValueError, match="unknown part"):
        mnist.Settings(parts=("bogus",))


def test_the_results_note_describes_the_students_that_were_trained():
    from keras_kd.experiments._mnist_runner import _students_note

    assert _students_note(mnist.Settings(parts=("teacher",))) == ""
    main = _students_note(mnist.Settings(parts=("teacher", "distilled"), student_epochs=30))
    assert main.startswith("Students: Adam 0.001") and "30 epochs" in main
    small = _students_note(mnist.Settings(
        parts=("teacher", "small"), small_widths=(30,), small_student_epochs=60,
        small_learning_rates=(0.001, 0.003),
    ))
    assert "Students:" not in small
    assert "Small students (30-30): Adam 0.001 or 0.003 (chosen on held-out images)" in small
    assert "60 epochs" in small
