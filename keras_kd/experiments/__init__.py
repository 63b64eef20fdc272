"""The paper's experiments as library code, each the body of a `keras-kd` subcommand.

- `keras_kd.experiments.mnist`: section 3 (MNIST): `keras-kd mnist`.
- `keras_kd.experiments.acoustic`: sections 4 and 6 on FSDD: `keras-kd acoustic`.
- `keras_kd.experiments.specialists`: section 5 on two-digit MNIST:
  `keras-kd specialists`.
- `keras_kd.experiments.imagenet`: ImageNet / Imagenette: `keras-kd imagenet`.
- `keras_kd.experiments.language_model`: token-level distillation of a causal
  Transformer language model on the Python standard library's source (issue
  17): `keras-kd language-model`. Its corpus is the running Python's library,
  so it reads no data folder.

Each module exposes the same two functions:

- `build_parser() -> argparse.ArgumentParser`: its options (`keras-kd NAME
  --help`), including `--quick`, a run of a minute or less on a small subset.
- `main(argv: list[str] | None = None) -> int`: parses `argv`, runs the
  experiment in a `keras_kd.runs.RunFolder` (`--out`), and returns the exit
  status (2 with one line on stderr for a user error).

They train through `keras_kd.runs`, so a rerun reuses finished models, resumes
interrupted ones and refuses a folder made with other settings. The library never
imports this package; `keras_kd.cli` and `benchmarks/` do.
"""
