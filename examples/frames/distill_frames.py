"""Distil a recurrent frame tagger: (batch, time, classes) outputs with a Keras mask.

Every utterance of the Free Spoken Digit Dataset becomes one sequence of 10 ms
log-mel frames, each labelled with the spoken digit or silence (the paper's
section 4 task, read as sequences). Utterances are padded with all-zero frames
to the longest one and a `Masking` layer marks the padding, so the Distiller's
losses are means over the real frames of the batch, and its metrics count real
frames only.

1. The teacher: a bidirectional GRU, trained with `compile`/`fit`.
2. The student: a small one-directional GRU, trained from scratch on the labels,
   and distilled from the teacher with `keras_kd.Distiller` (online, T = 2).

    KERAS_KD_DATA_DIR=path/to/data python examples/frames/distill_frames.py

`--quick` uses 8 takes per speaker and digit and one epoch each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

import keras_kd
from keras_kd.datasets import fsdd


def as_sequences(frames: fsdd.FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """Features `(utterances, longest, bins)` padded with zeros, labels `(utterances, longest)`."""
    lengths = np.bincount(frames.utterance, minlength=len(frames.recordings))
    x = np.zeros((len(lengths), lengths.max(), frames.features.shape[1]), np.float32)
    y = np.zeros(x.shape[:2], np.int32)
    for u in range(len(lengths)):
        x[u, : lengths[u]] = frames.features[frames.utterance == u]
        y[u, : lengths[u]] = frames.labels[frames.utterance == u]
    return x, y


def tagger(bins: int, units: int, bidirectional: bool, name: str) -> keras.Model:
    """Frames -> Masking -> GRU -> per-frame logits (10 digits and silence)."""
    frames = keras.Input((None, bins))
    h = keras.layers.Masking(mask_value=0.0)(frames)
    gru = keras.layers.GRU(units, return_sequences=True)
    h = (keras.layers.Bidirectional(gru) if bidirectional else gru)(h)
    return keras.Model(frames, keras.layers.Dense(fsdd.NUM_CLASSES)(h), name=name)


def scores(model: keras.Model, x: np.ndarray, frames: fsdd.FrameSet) -> str:
    """Test frame accuracy and word error rate (a word: the utterance's summed frames)."""
    padded = keras.ops.convert_to_numpy(model(x, training=False))  # one batch
    logits = np.concatenate([padded[u, : np.sum(frames.utterance == u)]
                             for u in range(len(x))])  # fmt: skip
    accuracy = np.mean(logits.argmax(-1) == frames.labels)
    return f"{100 * accuracy:.1f}% | {100 * fsdd.word_error_rate(logits, frames):.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument("--out", default="runs/frames-example", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    data = fsdd.load_fsdd(args.data_dir, split="speaker", cache_dir=args.out / "features",
                          select=(lambda r: r.take < 8) if args.quick else None)  # fmt: skip
    x_train, y_train = as_sequences(data.train)
    x_test, _ = as_sequences(data.test)
    bins = x_train.shape[-1]
    labels = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    keras.utils.set_random_seed(0)
    teacher = tagger(bins, 128, bidirectional=True, name="teacher")
    teacher.compile(optimizer="adam", loss=labels, metrics=["accuracy"])
    teacher.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=2)

    keras.utils.set_random_seed(1)
    scratch = tagger(bins, 32, bidirectional=False, name="scratch")
    scratch.compile(optimizer="adam", loss=labels, metrics=["accuracy"])
    scratch.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=2)

    keras.utils.set_random_seed(1)
    student = tagger(bins, 32, bidirectional=False, name="student")
    distiller = keras_kd.Distiller(student=student, teacher=teacher, temperature=2.0,
                                   soft_weight=0.5)  # fmt: skip
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=2)

    print(f"\nTest speaker theo, {len(x_test)} utterances, {len(data.test)} frames:")
    print("| model | frame accuracy | WER |\n| --- | --- | --- |")
    for label, model in (("teacher, BiGRU 128", teacher), ("student from scratch, GRU 32",
                         scratch), ("student distilled, GRU 32", student)):  # fmt: skip
        print(f"| {label} | {scores(model, x_test, data.test)} |")


if __name__ == "__main__":
    main()
