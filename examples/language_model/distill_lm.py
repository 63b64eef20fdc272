"""Token-level distillation of a small causal Transformer LM, in one page of keras-kd.

The corpus is the Python standard library's own source (on every machine, no
download), tokenized by a byte-pair encoding trained on its training files. A
4-block teacher is trained on the next tokens; a 2-block student is trained
from scratch and distilled from the teacher token by token: `keras_kd.Distiller`
takes `(batch, time, vocab)` logits, and `Embedding(mask_zero=True)` masks the
padding, so every loss is a mean over real tokens. A third student learns from
the teacher's top-k logits per token, cached once, without running the teacher.
Test perplexity is per token of this tokenizer, on files that no model saw.

The whole experiment (seeds, resume, results table) is `keras-kd language-model`.

    python examples/language_model/distill_lm.py --quick   # a few minutes on 2 CPUs
    python examples/language_model/distill_lm.py           # about half an hour
"""

import argparse
import math
import tempfile

import keras
import tensorflow as tf

import keras_kd
from keras_kd.datasets.python_source import load_python_source
from keras_kd.evaluation import perplexity
from keras_kd.losses import TemperedKL
from keras_kd.models import causal_transformer


def batches(x, y, batch_size, seed):
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(batch_size)
    )


def adam(args, windows):
    steps = args.epochs * math.ceil(windows / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps, alpha=0.1,
        warmup_target=args.learning_rate, warmup_steps=min(200, steps // 10),
    )  # fmt: skip
    return keras.optimizers.Adam(schedule, clipnorm=1.0)


def model(args, vocab, size, name):
    keras.utils.set_random_seed(args.seed)
    layers, width = size
    return causal_transformer(
        vocab, args.sequence_length, layers=layers, width=width, heads=4, name=name
    )


def distil(student, teacher, data, args, windows):
    """Trains `student` on `data` from `teacher` (None: the batches carry its logits)."""
    distiller = keras_kd.Distiller(
        student=student,
        teacher=teacher,
        # chunk_size bounds the soft loss's memory for large vocabularies.
        distillation_loss=TemperedKL(args.temperature, chunk_size=4096),
        soft_weight=args.soft_weight,
    )
    distiller.compile(adam(args, windows))  # hard term: next-token cross-entropy
    distiller.fit(data, epochs=args.epochs, verbose=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-bytes", type=int, default=1_000_000)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--soft-weight", type=float, default=0.5)
    parser.add_argument("--top-k", type=int, default=64, help="logits per token in the cache")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    teacher_size, student_size = (4, 256), (2, 128)
    if args.quick:
        args.max_bytes, args.vocab_size, args.sequence_length, args.epochs = (
            200_000, 512, 64, 1
        )
        teacher_size, student_size = (2, 64), (1, 32)

    source = load_python_source(args.max_bytes, args.vocab_size, args.sequence_length)
    vocab = source.tokenizer.vocab_size
    if not 1 <= args.top_k <= vocab:
        parser.error(f"--top-k must be in [1, {vocab}] (the vocabulary), got {args.top_k}")
    (x, y), (x_test, y_test) = source.splits["train"], source.splits["test"]
    print(f"{source.tokens('train'):,} training tokens, {vocab} ids, "
          f"Python {source.python_version} library (digest {source.files_digest})")  # fmt: skip
    next_token = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = model(args, vocab, teacher_size, "teacher")
    teacher.compile(adam(args, len(x)), next_token)
    teacher.fit(batches(x, y, args.batch_size, args.seed), epochs=args.epochs, verbose=2)

    scratch = model(args, vocab, student_size, "scratch")
    scratch.compile(adam(args, len(x)), next_token)
    scratch.fit(batches(x, y, args.batch_size, args.seed), epochs=args.epochs, verbose=2)

    student = model(args, vocab, student_size, "student")
    distil(student, teacher, batches(x, y, args.batch_size, args.seed), args, len(x))

    # The teacher once over the training windows, its top-k logits per token kept;
    # the student then trains on the replay, and the teacher does not run again.
    with tempfile.TemporaryDirectory() as folder:
        cache = keras_kd.build_teacher_cache(teacher, x, folder, top_k=args.top_k)
        cached = model(args, vocab, student_size, "cached")
        replay = cache.dataset(x, y, batch_size=args.batch_size, seed=args.seed)
        distil(cached, None, replay, args, len(x))

    students = (("teacher", teacher), ("scratch", scratch), ("distilled", student),
                (f"top-{args.top_k} cache", cached))  # fmt: skip
    for name, lm in students:
        print(f"{name:>12}: test perplexity {perplexity(lm, x_test, y_test):.2f}")


if __name__ == "__main__":
    main()
