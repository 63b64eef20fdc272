"""Distil a 10-net ensemble of speech frame classifiers into one net (paper section 4).

The recipe of Hinton, Vinyals and Dean (2015), on the Free Spoken Digit Dataset:

1. every 10 ms frame is an example: 40 log-mel coefficients of the frame and its
   5 + 5 neighbours in, its digit (or silence) out;
2. ten nets of the same shape, differing only by seed, form an ensemble (the
   arithmetic mean of their probabilities);
3. the ensemble runs once over the training frames and its logits are cached;
4. one net of the same shape learns from the cached soft targets at temperature
   T, plus the hard labels.

Words are recognised by summing frame log-probabilities over each utterance.

    KERAS_KD_DATA_DIR=path/to/data python examples/acoustic/distill_acoustic.py

`--quick` runs a small version in well under a minute. The full experiment (a
validation set that chooses T, several seeds, soft targets as a regularizer on 3%
of the data, resumable run folders) is `keras-kd acoustic`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras

import keras_kd
from keras_kd import evaluation, models
from keras_kd.datasets import fsdd

CONTEXT = 5  # frames of context on each side


def frame_net(inputs: int, hidden: tuple[int, ...]):
    """An ensemble member: ReLU layers, 11 logits (10 digits and silence)."""
    model = models.mlp(inputs, hidden, fsdd.NUM_CLASSES, name="frame_net")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def scores(model, x, frames) -> tuple[str, str]:
    """Test frame accuracy and word error rate, as percentages."""
    logits = evaluation.predict_logits(model, x, batch_size=4096)
    accuracy = evaluation.accuracy(logits, frames.labels)
    return (
        f"{100 * accuracy:.1f}%",
        f"{100 * fsdd.word_error_rate(logits, frames):.1f}%",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument("--out", default="runs/acoustic-example", type=Path)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--temperature", type=float, default=5.0)
    parser.add_argument("--soft-weight", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="2 members, 1 epoch")
    args = parser.parse_args()
    hidden = (32,) if args.quick else (256, 256)
    members, epochs = (2, 1) if args.quick else (args.members, args.epochs)

    # Speaker split: every recording of `theo` is the test set.
    data = fsdd.load_fsdd(
        args.data_dir,
        split="speaker",
        cache_dir=args.out / "features",
        select=(lambda r: r.take < 8) if args.quick else None,
    )
    x_train = data.train.windows(CONTEXT, CONTEXT)
    y_train = data.train.labels
    x_test = data.test.windows(CONTEXT, CONTEXT)

    # The teacher: nets that differ by seed, combined by their mean probability.
    ensemble = keras_kd.train_ensemble(
        lambda seed: frame_net(x_train.shape[1], hidden),
        members,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=256,
        mean="arithmetic",
    )
    # Its member logits, computed once; every distillation epoch replays them.
    cache = keras_kd.build_teacher_cache(
        ensemble, x_train, args.out / "teacher-cache", batch_size=4096
    )

    keras.utils.set_random_seed(1000)
    student = models.mlp(x_train.shape[1], hidden, fsdd.NUM_CLASSES, name="student")
    distiller = keras_kd.Distiller(
        student=student,
        teacher=None,  # the teacher's outputs come from the cache
        temperature=args.temperature,
        soft_weight=args.soft_weight,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    replay = cache.dataset(
        x_train, y_train, batch_size=256, temperature=args.temperature
    )
    distiller.fit(replay, epochs=epochs)

    print(f"\nTest speaker theo, {len(data.test)} frames:")
    print("| System | Frame accuracy | WER |\n| --- | --- | --- |")
    rows = {
        "Baseline (member 0)": ensemble.members[0],
        f"{members}xEnsemble": ensemble,
        f"Distilled (T={args.temperature:g})": student,
    }
    for system, model in rows.items():
        print(f"| {system} | " + " | ".join(scores(model, x_test, data.test)) + " |")


if __name__ == "__main__":
    main()
