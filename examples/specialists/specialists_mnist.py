"""Specialist models on two-digit MNIST (Hinton, Vinyals and Dean 2015, section 5).

The paper's recipe in one pass over keras-kd's public API, to read and copy:

1. a small generalist confuses some of the 100 classes (00 to 99) of two-digit
   MNIST (two digits side by side, label `10 * left + right`);
2. `find_confusable_subsets` clusters the classes it confuses;
3. `train_specialist` trains one specialist per cluster (the generalist's
   weights, a head over the cluster plus a "dustbin" class, half of each batch
   from the cluster, dustbin corrected for that oversampling);
4. `SpecialistEnsemble` combines generalist and specialists per image (eq. 5).

With the default options this is the recipe of `keras-kd specialists` (same
seeds, same figures); that command adds the run folder that reuses finished
models, several seeds, and the results as Markdown and JSON.

    KERAS_KD_DATA_DIR=../shared/data python examples/specialists/specialists_mnist.py
"""

import argparse

import keras
import numpy as np

import keras_kd
from keras_kd.datasets.two_digit_mnist import CLASS_NAMES, load_two_digit_mnist
from keras_kd.evaluation import accuracy, predict_logits
from keras_kd.models import mlp
from keras_kd.specialists import coverage_table

SEED = 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument("--train-pairs", type=int, default=60000)
    parser.add_argument(
        "--holdout", type=int, default=6000, help="pairs for clustering"
    )
    parser.add_argument("--test-pairs", type=int, default=10000)
    parser.add_argument("--generalist-epochs", type=int, default=2)
    parser.add_argument("--specialist-examples", type=int, default=20000)
    parser.add_argument("--specialist-epochs", type=int, default=2)
    parser.add_argument(
        "--soft-weight",
        type=float,
        default=0.0,
        help="weight of the generalist's soft targets (section 6.1)",
    )
    parser.add_argument("--save", default=None, help="save the ensemble (.keras)")
    return parser.parse_args()


def main():
    args = parse_args()
    (x_all, y_all), (x_test, y_test) = load_two_digit_mnist(
        args.data_dir,
        train_pairs=args.train_pairs,
        test_pairs=args.test_pairs,
        seed=SEED,
    )
    x_held = x_all[: args.holdout]  # only for finding the confusable classes
    x_train, y_train = x_all[args.holdout :], y_all[args.holdout :]

    # 1. A deliberately small generalist: one hidden layer of 32 units, logits out.
    keras.utils.set_random_seed(SEED)
    generalist = mlp((28, 56), (32,), 100, name="generalist")
    generalist.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    generalist.fit(
        x_train, y_train, batch_size=128, epochs=args.generalist_epochs, verbose=2
    )

    # 2. Confusable classes: K-means on the covariance of the generalist's
    #    predicted probabilities; the clusterings for K = 10 and K = 20 are pooled,
    #    so a class can be covered by two specialists.
    held_probabilities = keras.ops.convert_to_numpy(
        keras.ops.softmax(predict_logits(generalist, x_held))
    )
    clusters = keras_kd.find_confusable_subsets(held_probabilities, (10, 20), seed=SEED)
    print(clusters.report(CLASS_NAMES))

    # 3. One specialist per subset. `soft_weight` > 0 adds the generalist's soft
    #    targets, folded onto subset + dustbin, as a regulariser.
    train_logits = predict_logits(generalist, x_train)
    specialists = []
    for m, subset in enumerate(clusters.subsets):
        keras.utils.set_random_seed(SEED + 1 + m)
        specialist, info = keras_kd.train_specialist(
            generalist,
            subset,
            x_train,
            y_train,
            generalist_logits=train_logits,
            num_examples=args.specialist_examples,
            epochs=args.specialist_epochs,
            batch_size=128,
            soft_weight=args.soft_weight,
            temperature=2.0,
            seed=SEED + m,
            verbose=0,
        )
        print(
            f"specialist {m:2d} over {len(subset):2d} classes: dustbin shifted by "
            f"{info['dustbin_log_shift']:.2f}"
        )
        specialists.append(specialist)

    # 4. Per test image, the generalist's top 2 classes pick the active
    #    specialists, and eq. 5 finds the distribution they all agree on best.
    ensemble = keras_kd.SpecialistEnsemble(generalist, specialists, clusters, top_n=2)
    generalist_logits = predict_logits(generalist, x_test)
    probabilities = ensemble.predict(x_test, batch_size=500, verbose=0)
    print(f"generalist accuracy:       {accuracy(generalist_logits, y_test):.4f}")
    print(f"with specialists (eq. 5):  {accuracy(probabilities, y_test):.4f}")
    # The paper's Table 4: the change in correct answers, grouped by how many
    # specialists cover the true class.
    table = coverage_table(
        y_test,
        np.argmax(generalist_logits, -1),
        np.argmax(probabilities, -1),
        clusters,
    )
    for row in table:
        print(
            f"covered by {row['specialists covering']:>5}: {row['examples']:5d} "
            f"images, {row['correct_change']:+4d} correct "
            f"({100 * row['relative_change']:+.1f}%)"
        )
    if args.save:
        ensemble.save(args.save)  # reloads with keras.models.load_model


if __name__ == "__main__":
    main()
