"""Choosing a `tf.distribute` strategy, precision and batch scaling from flags.

One call, `configure`, turns three command-line choices into a ready set-up:

- `strategy`: `"auto"` picks `MultiWorkerMirroredStrategy` when the `TF_CONFIG`
  variable names more than one worker, `MirroredStrategy` when more than one GPU
  is visible, and TensorFlow's default (one device) strategy otherwise. The
  explicit names `"default"`, `"mirrored"` and `"multi_worker"` force a choice.
- `precision`: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"` (the Keras
  global dtype policy). The `Distiller` computes its soft-target loss in float32
  whatever the policy.
- The batch size is given *per replica*; the global batch is that times the
  number of replicas, and the learning rate follows the linear scaling rule of
  Goyal et al. (2017): `lr = base_lr * global_batch / base_batch`.

`MultiWorkerMirroredStrategy` must be created before any other TensorFlow op
runs, so call `configure` first thing in a program.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def tf_config_workers(environ: dict | None = None) -> int:
    """The number of workers `TF_CONFIG` names (0 when it is unset or has none).

    Args:
        environ: The environment to read; defaults to `os.environ`.

    Returns:
        The count of `worker` plus `chief` tasks in `TF_CONFIG`'s cluster.

    Raises:
        ValueError: when `TF_CONFIG` is not valid JSON.

    Example:

    >>> tf_config_workers({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'})
    2
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return 0
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}); got {text[:200]!r}. Set it to "
            '\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}\' or unset it.'
        ) from None
    cluster = config.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_strategy_name(name: str, environ: dict | None = None) -> str:
    """The concrete strategy that `name` means on this machine.

    Args:
        name: One of `STRATEGIES`.
        environ: The environment to read `TF_CONFIG` from; defaults to
            `os.environ`.

    Returns:
        `"default"`, `"mirrored"` or `"multi_worker"`.

    Raises:
        ValueError: for an unknown name.

    Example:

    >>> resolve_strategy_name("auto", {})  # no TF_CONFIG, no GPU here
    'default'
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {STRATEGIES}, got {name!r}. Use 'auto' to "
            "choose from TF_CONFIG and the visible GPUs."
        )
    if name != "auto":
        return name
    if tf_config_workers(environ) > 1:
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates the `tf.distribute.Strategy` that `name` resolves to.

    Args:
        name: One of `STRATEGIES` (see the module docstring).

    Returns:
        The strategy. `"mirrored"` uses every visible GPU (or, when there is
        none, the logical CPUs, reducing through one device); `"multi_worker"` reads the cluster from
        `TF_CONFIG` and uses every GPU of each host.

    Raises:
        ValueError: for an unknown name, or `"multi_worker"` without a
            `TF_CONFIG` that names the cluster.

    Example:

    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    resolved = resolve_strategy_name(name)
    if resolved == "multi_worker":
        if tf_config_workers() == 0:
            raise ValueError(
                "strategy='multi_worker' needs the TF_CONFIG environment variable to "
                "name the cluster and this process's task, e.g. TF_CONFIG="
                '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}\'.'
            )
        patch_keras_for_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if resolved == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Logical CPUs: reduce through one device. The default collective ops key
        # their instances per strategy object, so a second CPU strategy in the
        # same process can collide with the first one's pending collectives.
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    return tf.distribute.get_strategy()


def patch_keras_for_multi_worker() -> bool:
    """Works around Keras 3's `fit` failing under `MultiWorkerMirroredStrategy`.

    Keras 3.15 (TensorFlow issue #72388) fails in two places when several workers
    train: it reduces the first batch with `strategy.reduce` on the nested
    `(x, y)` structure to build the model symbolically, which the multi-worker
    strategy rejects ("Attempt to convert a value (PerReplica...)"), and it
    averages each scalar log with `strategy.reduce("MEAN", v, axis=0)`
    ("Invalid reduction dimension 0 for input with 0 dimensions"). This patch
    builds from the first local replica's batch (only shapes matter) and averages
    scalar logs over replicas with `axis=None`. It changes nothing outside
    multi-worker mode and is applied once; `make_strategy("multi_worker")`
    applies it.

    Returns:
        True when this call applied the patch, False when it was already applied.

    Example:

    >>> patch_keras_for_multi_worker() in (True, False)
    True
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_keras_kd_multi_worker_patch", False):
        return False
    multi_worker = tf_trainer._collective_all_reduce_multi_worker
    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return original_reduce(values, strategy, reduction)

    def first_local(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, distributed_iterator in iterator:
            batch = next(distributed_iterator)
            data_batch = tf.nest.map_structure(
                lambda v: first_local(strategy, v), batch
            )
            break
        return original_build(self, iterator=None, data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._keras_kd_multi_worker_patch = True
    return True


def set_precision(precision: str = "float32") -> str:
    """Sets the Keras global dtype policy.

    Args:
        precision: One of `PRECISIONS`. `"mixed_float16"` suits NVIDIA GPUs
            (Keras then scales the loss to avoid float16 underflow),
            `"mixed_bfloat16"` suits TPUs and recent CPUs/GPUs.

    Returns:
        The policy name now in force.

    Raises:
        ValueError: for an unknown precision.

    Example:

    >>> set_precision("float32")
    'float32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    keras.mixed_precision.set_dtype_policy(precision)
    return keras.mixed_precision.dtype_policy().name


def scaled_learning_rate(
    base_lr: float, global_batch_size: int, base_batch_size: int = 256
) -> float:
    """The linear scaling rule: `base_lr * global_batch_size / base_batch_size`.

    Goyal et al. (2017) train ResNet-50 on ImageNet with batches from 256 to 8k by
    scaling the learning rate with the batch and warming it up over the first
    epochs; MMRazor's ImageNet recipes state `lr` for a global batch of 256.

    Args:
        base_lr: Learning rate tuned for `base_batch_size`.
        global_batch_size: Examples per update, summed over all replicas.
        base_batch_size: The batch `base_lr` was tuned for.

    Returns:
        The learning rate for `global_batch_size`.

    Raises:
        ValueError: for a non-positive value.

    Example:

    >>> scaled_learning_rate(0.1, 512)
    0.2
    """
    for argument, value in (
        ("base_lr", base_lr),
        ("global_batch_size", global_batch_size),
        ("base_batch_size", base_batch_size),
    ):
        if not value > 0:
            raise ValueError(f"`{argument}` must be > 0, got {value!r}.")
    return base_lr * global_batch_size / base_batch_size


@dataclasses.dataclass(frozen=True)
class DistributionSetup:
    """What `configure` chose; print it so a run's log says how it ran.

    Attributes:
        strategy: The `tf.distribute.Strategy` to build models under.
        strategy_name: `"default"`, `"mirrored"` or `"multi_worker"`.
        replicas: Replicas in sync (devices over all workers).
        workers: Worker processes (1 unless multi-worker).
        worker_index: This process's index among the workers (0 is the chief).
        precision: The Keras dtype policy in force.
        jit_compile: Whether `compile(jit_compile=...)` should use XLA.
        per_replica_batch_size: Examples per replica per step.
        global_batch_size: `per_replica_batch_size * replicas`.
        learning_rate: `base_lr` scaled to the global batch (linear rule).
    """

    strategy: tf.distribute.Strategy
    strategy_name: str
    replicas: int
    workers: int
    worker_index: int
    precision: str
    jit_compile: bool
    per_replica_batch_size: int
    global_batch_size: int
    learning_rate: float

    @property
    def is_chief(self) -> bool:
        """True for the process that writes results (worker 0)."""
        return self.worker_index == 0

    def describe(self) -> str:
        """One line for the log: strategy, replicas, precision, batch and lr."""
        return (
            f"strategy={self.strategy_name} replicas={self.replicas} "
            f"workers={self.workers} (this is worker {self.worker_index}) "
            f"precision={self.precision} xla={self.jit_compile} "
            f"batch={self.per_replica_batch_size}/replica -> "
            f"{self.global_batch_size} global, lr={self.learning_rate:g}"
        )


def configure(
    strategy: str = "auto",
    *,
    precision: str = "float32",
    jit_compile: bool = False,
    per_replica_batch_size: int = 32,
    base_lr: float = 0.1,
    base_batch_size: int = 256,
) -> DistributionSetup:
    """Creates the strategy, sets the precision and scales batch and learning rate.

    Args:
        strategy: One of `STRATEGIES`.
        precision: One of `PRECISIONS`.
        jit_compile: Compile train and test steps with XLA.
        per_replica_batch_size: Examples per replica per step; the global batch
            is this times the number of replicas.
        base_lr: Learning rate for a global batch of `base_batch_size`.
        base_batch_size: The batch `base_lr` is stated for (256 in MMRazor's
            ImageNet configurations).

    Returns:
        A `DistributionSetup`.

    Raises:
        ValueError: for an unknown strategy or precision, a non-positive batch
            size or learning rate, or `"multi_worker"` without `TF_CONFIG`.

    Example:

    >>> setup = configure("default", per_replica_batch_size=64, base_lr=0.1)
    >>> setup.global_batch_size, round(setup.learning_rate, 4)
    (64, 0.025)
    """
    if not int(per_replica_batch_size) > 0:
        raise ValueError(
            f"`per_replica_batch_size` must be > 0, got {per_replica_batch_size!r}."
        )
    # Validated before the strategy and the dtype policy (global side effects).
    scaled_learning_rate(base_lr, int(per_replica_batch_size), base_batch_size)
    chosen = make_strategy(strategy)
    name = resolve_strategy_name(strategy)
    policy = set_precision(precision)
    replicas = chosen.num_replicas_in_sync
    workers, worker_index = 1, 0
    resolver = getattr(chosen, "cluster_resolver", None)
    if name == "multi_worker" and resolver is not None:
        workers = max(tf_config_workers(), 1)
        worker_index = int(resolver.task_id or 0)
        if resolver.task_type == "worker" and "chief" in resolver.cluster_spec().jobs:
            worker_index += 1
    global_batch = int(per_replica_batch_size) * replicas
    return DistributionSetup(
        strategy=chosen,
        strategy_name=name,
        replicas=replicas,
        workers=workers,
        worker_index=worker_index,
        precision=policy,
        jit_compile=bool(jit_compile),
        per_replica_batch_size=int(per_replica_batch_size),
        global_batch_size=global_batch,
        learning_rate=scaled_learning_rate(base_lr, global_batch, base_batch_size),
    )


def distributed_dataset(
    strategy: tf.distribute.Strategy,
    dataset_fn: Callable[[tf.distribute.InputContext | None], tf.data.Dataset],
):
    """Builds the input of `fit` with one pipeline per worker.

    With more than one replica, `dataset_fn(input_context)` runs once per worker
    (`input_context.input_pipeline_id` says which) and must return batches of the
    per-replica size, `input_context.get_per_replica_batch_size(global)`; each
    worker then reads and decodes only its share. With one replica it is called
    with `None` and must return global batches.

    Args:
        strategy: The strategy `fit` will run under.
        dataset_fn: `input_context -> tf.data.Dataset` as above (e.g.
            `functools.partial(keras_kd.datasets.imagenet.train_dataset, ...)`
            with `input_context` left open).

    Returns:
        A `tf.data.Dataset` or a distributed dataset; `keras.Model.fit` accepts
        both (pass `steps_per_epoch`).

    Example:

    >>> strategy = make_strategy("default")
    >>> ds = distributed_dataset(
    ...     strategy, lambda ctx: tf.data.Dataset.range(8).batch(4))
    >>> [int(b.shape[0]) for b in ds]
    [4, 4]
    """
    if strategy.num_replicas_in_sync == 1 and tf_config_workers() <= 1:
        return dataset_fn(None)
    return strategy.distribute_datasets_from_function(dataset_fn)
