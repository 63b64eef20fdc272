"""A few distillation steps on an image folder, as one worker of a cluster or alone.

Run by tests/test_distribute.py: with TF_CONFIG set, this process is one worker
of a MultiWorkerMirroredStrategy cluster; without it, a single-device run. Writes
the student's final weights to the `.npz` file named by `--out`.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_kd import distribute  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-replica-batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    # The strategy must exist before any other TensorFlow op runs.
    setup = distribute.configure(
        "auto",
        per_replica_batch_size=args.per_replica_batch,
        base_lr=0.05,
        base_batch_size=8,
    )
    print(setup.describe(), flush=True)

    import keras
    import numpy as np

    import keras_kd
    from keras_kd.datasets import imagenet

    data = imagenet.load_imagenet(args.data, source="folder")

    def dataset_fn(input_context):
        return imagenet.train_dataset(
            data,
            image_size=12,
            global_batch_size=setup.global_batch_size,
            seed=3,
            input_context=input_context,
        )

    def tiny(width, name):
        return keras.Sequential(
            [
                keras.Input((12, 12, 3)),
                keras.layers.Rescaling(1 / 255.0),
                keras.layers.Conv2D(width, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(data.num_classes),
            ],
            name=name,
        )

    keras.utils.set_random_seed(0)
    with setup.strategy.scope():
        teacher = tiny(6, "teacher")
        student = tiny(4, "student")
        distiller = keras_kd.Distiller(student=student, teacher=teacher, temperature=2.0, soft_weight=0.7)
        distiller.compile(
            optimizer=keras.optimizers.SGD(setup.learning_rate, momentum=0.9),
            metrics=["accuracy"],
        )
    train = distribute.distributed_dataset(setup.strategy, dataset_fn)
    distiller.fit(train, epochs=1, steps_per_epoch=args.steps, verbose=2)
    weights = {f"w{i}": w for i, w in enumerate(student.get_weights())}
    np.savez(args.out, **weights)


if __name__ == "__main__":
    main()
