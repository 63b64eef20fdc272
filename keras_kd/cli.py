"""The `keras-kd` command: thin argument parsing over the library.

Subcommands:
  demo        distil on scikit-learn's bundled digits (no download), print a table
  mnist, acoustic, imagenet, specialists
              run the paper's experiments from `examples/` (source checkout)
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Experiment subcommands run the example scripts, which live beside the package in
# a source checkout (the Makefile installs it in editable mode).
EXAMPLES = {
    "mnist": ("mnist/distill_mnist.py", "MNIST, section 3 of the paper"),
    "acoustic": ("acoustic/distill_acoustic.py", "FSDD frame classification, sections 4 and 6"),
    "imagenet": ("imagenet/distill_imagenet.py", "ImageNet / Imagenette distillation"),
    "specialists": ("specialists/specialists_mnist.py", "specialist models, section 5"),
}


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


def examples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list[str]) -> int:
    relative, _ = EXAMPLES[name]
    script = examples_dir() / relative
    if not script.is_file():
        raise CommandError(
            f"`keras-kd {name}` runs examples/{relative} from a source checkout, and "
            f"{script} does not exist. Clone the keras-kd repository and install it "
            "with `pip install -e .`."
        )
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="teacher, student from scratch and distilled student on bundled digits",
        description=(
            "Trains a teacher, a small student from scratch and the same student "
            "distilled from the teacher on scikit-learn's bundled 8x8 digits, then "
            "prints their test accuracy and training time. Needs no download."
        ),
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model")
    parser.add_argument("--temperature", type=float, default=None, help="distillation temperature")
    parser.add_argument("--alpha", type=float, default=None, help="weight of the soft term")
    parser.add_argument("--seed", type=int, default=0, help="random seed")

    def run(args):
        from keras_kd import demo

        options = {k: v for k, v in vars(args).items() if k in ("epochs", "temperature", "alpha") and v is not None}
        demo.run_demo(seed=args.seed, **options)
        return 0

    parser.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-kd",
        description="Knowledge distillation (Hinton, Vinyals, Dean 2015) for Keras 3.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    _add_demo(subparsers)
    for name, (relative, summary) in EXAMPLES.items():
        example = subparsers.add_parser(
            name,
            help=f"{summary} (examples/{relative}; --help for its options)",
            add_help=False,
        )
        example.add_argument("example_args", nargs=argparse.REMAINDER)
        example.set_defaults(handler=lambda args, name=name: run_example(name, args.example_args))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keras-kd` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as error:
        print(f"keras-kd {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
