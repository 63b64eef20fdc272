"""keras_kd.experiments.imagenet (`keras-kd imagenet`, benchmarks/imagenette.py):
quick mode, reuse per kind of run, refusals, targets, bad data."""

import json

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from _imagenet_folder import CLASSES, write_image_folder

from keras_kd import distribute
from keras_kd.experiments import (
    imagenet,
    imagenet_models,
    imagenet_results,
    imagenet_runs,
)
from keras_kd.runs import RunFolder

QUICK_RUNS = ["--quick", "--seeds", "0", "--steps-per-epoch", "2"]


def _argv(data, out, *extra):
    return ["--data-dir", str(data), "--out", str(out), *QUICK_RUNS, *extra]


def _records(out):
    return {r["run"]: r for r in json.loads((out / "results.json").read_text())["runs"]}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run of the teacher and two kinds of student, on real files with
    an undecodable validation JPEG and a text file named `.JPEG` in training."""
    root = tmp_path_factory.mktemp("imagenet-experiment")
    data = root / "data"
    write_image_folder(data, train_per_class=8, val_per_class=4, corrupt="val")
    (data / "train" / CLASSES[1] / "readme.JPEG").write_text("not an image\n")
    out = root / "run"
    argv = _argv(data, out, "--runs", "kd,cached")
    status = imagenet.main(argv)
    return data, out, argv, status


@pytest.mark.slow
def test_quick_mode_trains_and_reports_every_run(quick):
    data, out, argv, status = quick
    assert status == 0
    records = _records(out)
    assert list(records) == ["teacher", "kd-T4-w0.9-s0", "cached-T4-w0.9-s0"]
    for name, record in records.items():
        # Two classes (quick mode): top-5 is top-2; 4 + 4 decodable validation images.
        assert 0.0 <= record["top1"] <= record["top5"] == 1.0
        assert record["images"] == 8
        assert record["epochs"] == 1 and len(record["val_top1_curve"]) == 1
        assert 0.0 < min(record["epoch_seconds"]) <= record["seconds_per_epoch"]
        model = keras.models.load_model(out / "models" / name / "model.keras")
        assert model.output_shape == (None, 2)
        assert list((out / "models" / name / "tensorboard").rglob("*tfevents*"))
    assert records["cached-T4-w0.9-s0"]["views"] == 2
    assert records["cached-T4-w0.9-s0"]["cache_build_seconds"] > 0
    # The text file named .JPEG is left out of the cache: 8 + 8 decodable images.
    manifest = out / "models" / "teacher-cache-K2-40px" / "cache" / "manifest.json"
    assert json.loads(manifest.read_text())["num_examples"] == 16
    settings = json.loads(
        (out / "models" / "kd-T4-w0.9-s0" / "settings.json").read_text()
    )
    assert settings["soft_weight"] == 0.9 and settings["teacher.epochs"] == 1
    assert settings["data.classes"] == list(CLASSES[:2])
    text = (out / "results.md").read_text()
    for label in ("teacher mobilenetv2", "student, keras_kd.Distiller (online)",
                  "student, keras_kd.Distiller from cache (K=2)"):  # fmt: skip
        assert text.count(f"| {label} |") == 1, label
    assert "1 undecodable validation image(s) skipped: scores are over 8 images" in text
    assert "Targets" not in text  # only the benchmark judges the targets
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_rerun_and_sweeps_reuse_each_kind_and_never_rebuild_the_cache(quick, capsys):
    data, out, argv, _ = quick
    before = _records(out)
    cache = out / "models" / "teacher-cache-K2-40px" / "cache"
    shards = {f: f.stat().st_mtime_ns for f in cache.glob("shard-*")}
    assert shards
    capsys.readouterr()

    assert imagenet.main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier") == 3
    assert _records(out) == before

    # A temperature sweep trains only the distilled run of the new setting.
    assert imagenet.main([*argv, "--runs", "cached", "--temperature", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 1  # the teacher
    assert "cached-T2-w0.9-s0: cached, seed 0" in printed
    after = _records(out)
    assert list(after) == ["teacher", "cached-T2-w0.9-s0"]
    assert after["teacher"] == before["teacher"]
    assert {f: f.stat().st_mtime_ns for f in cache.glob("shard-*")} == shards
    settings = json.loads(
        (out / "models" / "cached-T2-w0.9-s0" / "settings.json").read_text()
    )
    assert settings["temperature"] == 2.0
    assert (out / "models" / "cached-T4-w0.9-s0" / "record.json").exists()


@pytest.mark.slow
def test_each_kind_records_only_the_settings_it_depends_on(quick, tmp_path):
    data, out, argv, _ = quick
    parser = imagenet.build_parser()

    def settings_of(*extra):
        settings = imagenet.settings_from_args(
            parser.parse_args([*argv, "--out", str(tmp_path / "other"), *extra])
        )
        setup = distribute.configure("default", per_replica_batch_size=4)
        data = imagenet.load_data(settings)
        with RunFolder(settings.out) as folder:
            experiment = imagenet_runs.ImagenetExperiment(settings, folder, setup, data)
            specs = [imagenet_runs.RunSpec("x", kind, 0) for kind in imagenet.KINDS]
            return {
                s.kind: imagenet_runs.flatten(experiment.run_settings(s)) for s in specs
            }

    base = settings_of()
    sweep = settings_of("--temperature", "8", "--soft-weight", "0.5", "--views", "3")
    assert sweep["teacher"] == base["teacher"] and sweep["scratch"] == base["scratch"]
    assert sweep["kd"]["temperature"] == 8.0 and sweep["peer"]["soft_weight"] == 0.5
    assert sweep["cached"]["cache.views"] == 3 and "cache.views" not in sweep["kd"]
    longer = settings_of("--epochs", "3")
    assert longer["teacher"] == base["teacher"] and longer["scratch"]["epochs"] == 3
    teacher = settings_of("--teacher-epochs", "3")
    assert teacher["scratch"] == base["scratch"]
    assert teacher["kd"]["teacher.epochs"] == 3 and teacher["teacher"]["epochs"] == 3


@pytest.mark.slow
def test_a_run_asked_for_with_other_settings_is_refused_naming_them(quick, capsys):
    data, out, argv, _ = quick
    capsys.readouterr()
    assert imagenet.main([*argv, "--runs", "kd", "--epochs", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("keras-kd imagenet: error:")
    assert "'kd-T4-w0.9-s0'" in error and "epochs: 1 in the folder, 2 now" in error
    # The teacher a distilled run needs is refused too, rather than retrained over.
    assert imagenet.main([*argv, "--runs", "kd", "--teacher-epochs", "2"]) == 2
    error = capsys.readouterr().err
    assert "'teacher'" in error and "epochs: 1 in the folder, 2 now" in error


@pytest.mark.slow
def test_the_targets_table_is_computed_from_the_runs(quick):
    data, out, argv, _ = quick
    assert imagenet.main([*argv, "--runs", "kd,cached"], with_targets=True) == 0
    summary = json.loads((out / "results.json").read_text())
    judged = {row["criterion"]: row for row in summary["targets"]}
    records = _records(out)
    teacher = judged["teacher top-1 %"]
    assert teacher["measured"] == f"{100 * records['teacher']['top1']:.2f}"
    assert teacher["verdict"] == (
        "met" if records["teacher"]["top1"] >= 0.8 else "missed"
    )
    cached, online = records["cached-T4-w0.9-s0"], records["kd-T4-w0.9-s0"]
    same_seed = judged["cached - online keras_kd, top-1 points (same seed)"]
    assert same_seed["measured"] == f"{100 * (cached['top1'] - online['top1']):+.2f}"
    ratio = min(online["epoch_seconds"]) / min(cached["epoch_seconds"])
    assert (
        judged["online / cached keras_kd, fastest epoch s"]["measured"]
        == f"{ratio:.2f}"
    )
    # No scratch or peer run: nothing about them is judged.
    assert not any("scratch" in c or "keras.distillation" in c for c in judged)
    assert "## Targets (issue 10)" in (out / "results.md").read_text()


def test_targets_judge_each_figure_against_its_threshold():
    def record(kind, seed, top1, fastest):
        return {
            "kind": kind,
            "seed": seed,
            "top1": top1,
            "epoch_seconds": [fastest, fastest + 9],
        }

    records = [
        record("teacher", 0, 0.7335, 390.0),
        record("scratch", 0, 0.5944, 67.2), record("scratch", 1, 0.6158, 67.3),
        record("kd", 0, 0.6713, 155.4), record("peer", 0, 0.6739, 151.8),
        record("cached", 0, 0.6721, 67.2), record("cached", 1, 0.6737, 68.0),
    ]  # fmt: skip
    rows = {
        r["criterion"]: (r["measured"], r["verdict"])
        for r in imagenet_results.targets(records)
    }
    assert rows == {
        "teacher top-1 %": ("73.35", "missed"),
        "keras_kd (cached) mean - scratch mean, top-1 points": ("+6.78", "met"),
        "that gap / largest seed range": ("6.78 / 2.14", "met"),
        "keras_kd online - keras.distillation, top-1 points (same seed)": (
            "-0.26",
            "met",
        ),
        "keras_kd online / keras.distillation, fastest epoch s": ("1.024", "missed"),
        "online / cached keras_kd, fastest epoch s": ("2.31", "met"),
        "cached - online keras_kd, top-1 points (same seed)": ("+0.08", ""),
    }
    assert (
        imagenet_results.targets(records[1:3]) == []
    )  # nothing to judge without its runs


def test_plan_names_runs_by_what_a_sweep_changes():
    settings = imagenet.Settings(runs=("scratch", "kd", "peer", "cached"), seeds=(0, 1),
                                 online_seeds=1, temperature=2.0, soft_weight=0.5)  # fmt: skip
    assert [spec.name for spec in imagenet.plan(settings)] == [
        "teacher", "scratch-s0", "scratch-s1", "kd-T2-w0.5-s0", "peer-T2-w0.5-s0",
        "cached-T2-w0.5-s0", "cached-T2-w0.5-s1",
    ]  # fmt: skip
    assert [s.name for s in imagenet.plan(imagenet.Settings(runs=("scratch",)))] == [
        "scratch-s0"
    ]


def test_the_peer_computes_the_same_loss_as_the_distiller():
    keras.utils.set_random_seed(1)
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    teacher.trainable = False
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    y = np.arange(8) % 4
    losses = {}
    for kind in ("kd", "peer"):
        network = keras.models.clone_model(student)
        network.set_weights(student.get_weights())
        model = imagenet_models.compile_run(
            kind, network, optimizer=keras.optimizers.SGD(0.0), teacher=teacher,
            temperature=3.0, soft_weight=0.7, metrics=False,
        )  # fmt: skip
        losses[kind] = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert losses["kd"] == pytest.approx(losses["peer"], rel=1e-5)
    assert losses["kd"] > 0


def test_an_empty_data_folder_is_one_line_and_nothing_is_written_into_it(
    tmp_path, capsys
):
    empty = tmp_path / "data"
    empty.mkdir()
    assert (
        imagenet.main(["--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 2
    )
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert f"No ImageNet data in {str(empty)!r} (from --data-dir)" in error
    assert "train/<class>/*.JPEG and val/<class>/*.JPEG" in error
    assert list(empty.iterdir()) == []
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_a_single_class_folder_and_renamed_options_are_one_line_errors(
    tmp_path, capsys
):
    write_image_folder(
        tmp_path / "data", train_per_class=2, val_per_class=1, corrupt=None
    )
    for split in ("train", "val"):
        for wnid in CLASSES[1:]:
            for path in (tmp_path / "data" / split / wnid).iterdir():
                path.unlink()
            (tmp_path / "data" / split / wnid).rmdir()
    argv = ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert imagenet.main(argv) == 2
    assert f"single class folder, '{CLASSES[0]}'" in capsys.readouterr().err
    renamed = (("--alpha", "--soft-weight", "0.2.0"), ("--mode", "--runs", "0.2.0"),
               ("--seed", "--seeds", "0.2.0"), ("--out-dir", "--out", "0.2.0"),
               ("--teacher", "--teacher-network", "0.3.0"),
               ("--student", "--student-network", "0.3.0"),
               ("--batch-size", "--per-replica-batch-size", "0.3.0"))  # fmt: skip
    for old, new, version in renamed:
        with pytest.raises(SystemExit) as exit_info:
            imagenet.main([*argv, old, "0.5"])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert f"{old} was renamed {new} in keras-kd {version}" in error
    # `keras-kd distill`'s --teacher is a file; here it points to where a file goes.
    with pytest.raises(SystemExit):
        imagenet.main([*argv, "--teacher", "teacher.keras"])
    assert "a trained teacher file goes to --teacher-weights" in capsys.readouterr().err
    assert imagenet.main([*argv, "--teacher-weights", str(tmp_path / "nope.h5")]) == 2
    assert "--teacher-weights" in capsys.readouterr().err


def test_quick_mode_without_a_data_folder_uses_a_synthetic_one(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    settings = imagenet.Settings(
        quick=True, out=str(tmp_path / "run"), **imagenet.QUICK
    )
    assert imagenet.uses_synthetic_data(settings)
    data = imagenet.load_data(settings, tmp_path / "synthetic")
    assert data.class_names == list(CLASSES[:2])
    assert data.train.num_examples == 24 and data.val.num_examples == 12
    assert (tmp_path / "synthetic" / "train").is_dir()
    monkeypatch.setenv("KERAS_KD_DATA_DIR", str(tmp_path))
    assert not imagenet.uses_synthetic_data(settings)


@pytest.mark.slow
def test_tfds_source_under_a_mirrored_strategy(tmp_path, capsys):
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (manual / name).write_bytes(b"")  # tfds' mock never reads them
    argv = ["--source", "tfds", "--data-dir", str(tmp_path / "tfds"), "--out",
            str(tmp_path / "run"), "--runs", "scratch", "--strategy", "mirrored",
            "--image-size", "32", "--per-replica-batch-size", "4", "--student-width", "0.35",
            "--epochs", "1", "--steps-per-epoch", "2", "--verbose", "0"]  # fmt: skip
    with tfds.testing.mock_data(num_examples=8):
        assert imagenet.main(argv) == 0
    printed = capsys.readouterr().out
    # Two logical CPUs (conftest): 4 images per replica, 8 global, lr scaled.
    assert "strategy=mirrored replicas=2" in printed
    assert "batch=4/replica -> 8 global, lr=0.003125" in printed
    assert "1000 classes" in printed
    record = _records(tmp_path / "run")["scratch-s0"]
    assert record["images"] == 8 and 0.0 <= record["top1"] <= record["top5"] <= 1.0
    log = tmp_path / "run" / "models" / "scratch-s0" / "epochs.jsonl"
    assert [json.loads(line)["steps"] for line in log.read_text().splitlines()] == [2]


def test_compile_run_passes_distiller_options_and_refuses_them_elsewhere():
    import keras_kd
    from keras_kd.experiments.imagenet_models import compile_run

    def conv(name, channels):
        pixels = keras.Input((8, 8, 3))
        features = keras.layers.Conv2D(channels, 1, name=f"{name}_features")(pixels)
        pooled = keras.layers.GlobalAveragePooling2D()(features)
        return keras.Model(pixels, keras.layers.Dense(4)(pooled), name=name)

    student, teacher = conv("student", 2), conv("teacher", 6)
    hint = keras_kd.Hint(student_layer="student_features", teacher_layer="teacher_features")
    model = compile_run(
        "kd", student, optimizer=keras.optimizers.SGD(0.01), teacher=teacher,
        distiller_options={"hints": [hint]},
    )
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    logs = model.fit(x, np.arange(8) % 4, epochs=1, verbose=0).history
    assert any(key.startswith("hint_") and key.endswith("_loss") for key in logs), logs
    with pytest.raises(ValueError, match="distiller_options"):
        compile_run(
            "scratch", student, optimizer=keras.optimizers.SGD(0.01),
            distiller_options={"hints": [hint]},
        )


def test_settings_of_0_2_still_work_as_defaults_with_a_warning():
    with pytest.warns(FutureWarning, match="'batch_size' is 'per_replica_batch_size'"):
        parser = imagenet.build_parser({"batch_size": 32, "teacher": "resnet101"})
    args = parser.parse_args([])
    with pytest.warns(FutureWarning, match="'teacher' is 'teacher_network'"):
        settings = imagenet.settings_from_args(args, {"batch_size": 32, "teacher": "resnet101"})
    assert settings.per_replica_batch_size == 32
    assert settings.teacher_network == "resnet101"
    help_text = " ".join(parser.format_help().split())
    assert "the global batch is this times the replicas) (default 32;" in help_text
    with pytest.raises(ValueError, match="Give 'student_network' only"):
        imagenet.renamed_settings({"student": "mobilenetv2", "student_network": "mobilenetv2"})
