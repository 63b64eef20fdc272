"""keras_kd.training: a run killed mid-epoch resumes to the uninterrupted weights."""

import json

import keras
import numpy as np
import pytest
from _imagenet_folder import write_image_folder

import keras_kd
from keras_kd import training
from keras_kd.datasets import imagenet

EPOCHS, STEPS, SAVE_FREQ, KILL_AT = 2, 3, 2, 5  # killed in epoch 2, backup at step 4


class Killed(Exception):
    pass


class KillAtStep(keras.callbacks.Callback):
    """Simulates a crash: raises after `step` optimizer steps."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise Killed(f"killed after step {self.step}")


def make_run(data):
    keras.utils.set_random_seed(0)

    def tiny(width, name):
        return keras.Sequential(
            [
                keras.Input((12, 12, 3)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(width, 3),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(data.num_classes),
            ],
            name=name,
        )

    distiller = keras_kd.Distiller(
        student=tiny(4, "student"), teacher=tiny(6, "teacher"), temperature=3.0, soft_weight=0.8
    )
    schedule = training.warmup_cosine(0.2, EPOCHS * STEPS, warmup_steps=2)
    distiller.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))

    def make_dataset(start_step):
        return imagenet.train_dataset(
            data, image_size=12, global_batch_size=4, seed=5, start_step=start_step
        )

    return distiller, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root, train_per_class=3, val_per_class=1, corrupt=None)
    return imagenet.load_imagenet(root)


def test_killed_run_resumes_mid_epoch_to_the_same_weights(data, tmp_path):
    reference, make_dataset = make_run(data)
    full = training.fit_resumable(
        reference,
        make_dataset,
        epochs=EPOCHS,
        steps_per_epoch=STEPS,
        backup_dir=tmp_path / "a",
        save_freq=SAVE_FREQ,
        verbose=0,
    )
    assert [record["epoch"] for record in full] == [1, 2]

    victim, make_dataset = make_run(data)
    with pytest.raises(Killed):
        training.fit_resumable(
            victim,
            make_dataset,
            epochs=EPOCHS,
            steps_per_epoch=STEPS,
            backup_dir=tmp_path / "b",
            save_freq=SAVE_FREQ,
            callbacks=[KillAtStep(KILL_AT)],
            verbose=0,
        )
    metadata = json.loads((tmp_path / "b" / "training_metadata.json").read_text())
    assert metadata["step"] == 4  # saved at steps 2, 3 (epoch end) and 4

    resumed, make_dataset = make_run(data)  # a fresh process would start like this
    starts = []
    records = training.fit_resumable(
        resumed,
        lambda step: starts.append(step) or make_dataset(step),
        epochs=EPOCHS,
        steps_per_epoch=STEPS,
        backup_dir=tmp_path / "b",
        save_freq=SAVE_FREQ,
        verbose=0,
    )
    assert starts == [4]  # the stream restarts at the backed-up step
    assert [record["epoch"] for record in records] == [2]
    assert int(resumed.optimizer.iterations) == EPOCHS * STEPS
    for a, b in zip(
        reference.student.get_weights(), resumed.student.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)  # BN moving statistics included
    # A finished run resumes to nothing.
    again, make_dataset = make_run(data)
    assert (
        training.fit_resumable(
            again,
            make_dataset,
            epochs=EPOCHS,
            steps_per_epoch=STEPS,
            backup_dir=tmp_path / "b",
            save_freq=SAVE_FREQ,
            verbose=0,
        )
        == []
    )


def test_warmup_cosine_schedule_shape():
    schedule = training.warmup_cosine(0.4, total_steps=10, warmup_steps=4)
    values = [float(schedule(step)) for step in range(11)]
    # Warm-up: 0.4 * (s + 1) / 5, so the first step does not waste its gradient.
    assert values[:5] == pytest.approx([0.08, 0.16, 0.24, 0.32, 0.4])
    assert values[4] == pytest.approx(0.4) and values[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    with pytest.raises(ValueError, match="warmup_steps"):
        training.warmup_cosine(0.1, total_steps=10, warmup_steps=10)


def test_batchnorm_momentum_is_set_in_nested_models_and_validated():
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.BatchNormalization(momentum=0.999)]
    )
    outer = keras.Sequential(
        [keras.Input((4,)), inner, keras.layers.BatchNormalization()]
    )
    assert training.batchnorm_momenta(outer) == [0.99, 0.999]
    assert training.set_batchnorm_momentum(outer, 0.9) == 2
    assert training.batchnorm_momenta(outer) == [0.9]
    with pytest.raises(ValueError, match="momentum"):
        training.set_batchnorm_momentum(outer, 1.0)


def test_batchnorm_inside_wrappers_is_found_once():
    shared = keras.layers.BatchNormalization(momentum=0.999)
    frames = keras.Input((3, 4))
    wrapped = keras.layers.TimeDistributed(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), shared])
    )(frames)
    model = keras.Model(frames, shared(keras.layers.Flatten()(wrapped)[:, :4]))
    assert training.set_batchnorm_momentum(model, 0.9) == 1  # shared: counted once
    assert shared.momentum == 0.9


def test_backup_without_a_step_is_refused(data, tmp_path):
    model, make_dataset = make_run(data)
    training.fit_resumable(
        model, make_dataset, epochs=1, steps_per_epoch=STEPS,
        backup_dir=tmp_path / "b", save_freq=SAVE_FREQ, verbose=0,
    )  # fmt: skip
    path = tmp_path / "b" / "training_metadata.json"
    assert sorted(tmp_path.joinpath("b").iterdir()) == sorted(
        tmp_path / "b" / name
        for name in ("latest.weights.h5", "latest.weights.h5.bkp",
                     "training_metadata.json", "training_metadata.json.bkp")
    )  # fmt: skip  (no temporary files left behind)
    path.write_text(json.dumps({"epoch": 0, "batch": 2}))  # a plain BackupAndRestore's
    again, make_dataset = make_run(data)
    with pytest.raises(ValueError, match="does not record its step"):
        training.fit_resumable(
            again, make_dataset, epochs=2, steps_per_epoch=STEPS,
            backup_dir=tmp_path / "b", save_freq=SAVE_FREQ, verbose=0,
        )  # fmt: skip


def test_kill_between_weights_and_metadata_resumes_at_the_weights_step(
    data, tmp_path, monkeypatch
):
    reference, make_dataset = make_run(data)
    training.fit_resumable(
        reference, make_dataset, epochs=EPOCHS, steps_per_epoch=STEPS,
        backup_dir=tmp_path / "a", save_freq=SAVE_FREQ, verbose=0,
    )  # fmt: skip

    class KilledWhileWritingMetadata:
        """`json` for training.py whose metadata write of step 4 is killed."""

        load = staticmethod(json.load)

        @staticmethod
        def dump(metadata, handle):
            if metadata.get("step") == 4:  # the weights of step 4 are in place
                raise Killed("killed between the weights and the metadata")
            json.dump(metadata, handle)

    victim, make_dataset = make_run(data)
    monkeypatch.setattr(training, "json", KilledWhileWritingMetadata)
    with pytest.raises(Killed):
        training.fit_resumable(
            victim, make_dataset, epochs=EPOCHS, steps_per_epoch=STEPS,
            backup_dir=tmp_path / "b", save_freq=SAVE_FREQ, verbose=0,
        )  # fmt: skip
    monkeypatch.undo()
    metadata = json.loads((tmp_path / "b" / "training_metadata.json").read_text())
    assert metadata["step"] == 3  # one backup behind the weights

    resumed, make_dataset = make_run(data)
    starts = []
    training.fit_resumable(
        resumed, lambda step: starts.append(step) or make_dataset(step),
        epochs=EPOCHS, steps_per_epoch=STEPS, backup_dir=tmp_path / "b",
        save_freq=SAVE_FREQ, verbose=0,
    )  # fmt: skip
    assert starts == [4]
    assert int(resumed.optimizer.iterations) == EPOCHS * STEPS  # not one step more
    for a, b in zip(
        reference.student.get_weights(), resumed.student.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
