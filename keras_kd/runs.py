"""Run folders for long experiments: reuse, resume, seeds and results.

Every experiment (`keras_kd.experiments`) and benchmark trains its models
through one `RunFolder`. Decisions, documented once:

- **A model is reused only when every setting that shaped it is unchanged.**
  Each model has its own sub-folder `models/<name>/` whose `settings.json` is
  written *before* training starts, so a half-trained backup is fingerprinted
  too. Asking for the same name with other settings raises `RunSettingsError`,
  which names each differing setting with both values; nothing is retrained
  over, or deleted. Put the settings you sweep into the name (as the
  experiments do with `T20`, `s0`) to keep several variants in one folder.
- **Resume after interruption.** `ModelRun.backup_dir` is where the training
  callback (`keras_kd.training.fit_resumable` or Keras' `BackupAndRestore`)
  keeps its state; a rerun of the same command continues from it. A model
  counts as finished only when `record.json` exists, which `ModelRun.finish`
  writes last, after the model file is complete.
- **One process per folder.** `RunFolder` holds `running.pid` while open; a
  second process on the same folder is refused (a stale file of a dead process
  is taken over).
- **Seeds** are separate runs (`<name>-s<seed>`); `seed_summary` gives the mean
  and spread that results tables show.
- **Results** are written whole or not at all as `results.md`, `results.json`
  and, when curves are given, `curves.png`.

Example:

>>> import tempfile, keras
>>> with RunFolder(tempfile.mkdtemp() + "/run") as runs:
...     run = runs.model("student", {"epochs": 1, "width": 8})
...     if not run.finished:
...         model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
...         run.finish(model, {"test_errors": 3})
...     print(run.record["test_errors"])
3
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_kd import files, reports

RUN_KIND = "run"
SETTINGS_FILE = "settings.json"
RECORD_FILE = "record.json"
MODEL_FILE = "model.keras"
LOCK_FILE = "running.pid"


class RunSettingsError(ValueError):
    """A run folder holds a model trained (or being trained) with other settings."""


class RunFolderBusyError(RuntimeError):
    """Another live process is training into the same run folder."""


def canonical_settings(settings: Mapping) -> dict:
    """`settings` as plain JSON values (tuples as lists, paths as strings).

    Raises:
        TypeError: for a value that has no JSON form.
    """
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=_plain))


def _plain(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    raise TypeError(
        f"Run settings must be JSON values (numbers, strings, lists, dicts); got "
        f"{type(value).__name__}: {value!r}."
    )


def fingerprint(settings: Mapping) -> str:
    """A short SHA-256 of the canonical settings (16 hex digits).

    Example:

    >>> fingerprint({"epochs": 3}) == fingerprint({"epochs": 3})
    True
    """
    text = json.dumps(canonical_settings(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_differences(stored: Mapping, wanted: Mapping) -> list[str]:
    """Human-readable differences between two settings mappings.

    Example:

    >>> settings_differences({"soft_weight": 0.9}, {"soft_weight": 0.1})
    ['soft_weight: 0.9 in the folder, 0.1 now']
    """
    missing = object()
    lines = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key, missing), wanted.get(key, missing)
        if old == new:
            continue
        old_text = "not set" if old is missing else json.dumps(old)
        new_text = "not set" if new is missing else json.dumps(new)
        lines.append(f"{key}: {old_text} in the folder, {new_text} now")
    return lines


class ModelRun:
    """One model of a run folder: its settings, backup, saved model and record.

    Get it from `RunFolder.model`; do not build it directly.
    """

    def __init__(self, folder: Path, name: str, settings: dict):
        self.folder = folder
        self.name = name
        self.settings = settings

    @property
    def model_path(self) -> Path:
        """Where the finished model is saved (`model.keras`)."""
        return self.folder / MODEL_FILE

    @property
    def backup_dir(self) -> Path:
        """The folder for the training callback's resumable state."""
        return self.folder / "backup"

    @property
    def finished(self) -> bool:
        """Whether the model and its record are complete."""
        return (self.folder / RECORD_FILE).exists()

    @property
    def record(self) -> dict:
        """What `finish` stored (metrics, history, timings).

        Raises:
            FileNotFoundError: when the model is not finished.
        """
        path = self.folder / RECORD_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"The model {self.name!r} in {self.folder.parent.parent} is not "
                "finished yet: train it (rerun the experiment) first."
            )
        return json.loads(path.read_text())

    def load(self, **kwargs):
        """Loads the finished model (`keras.models.load_model` arguments).

        Raises:
            FileNotFoundError: when the model is not finished.
        """
        import keras

        if not self.finished or not self.model_path.exists():
            raise FileNotFoundError(
                f"The model {self.name!r} has no finished model file in "
                f"{self.folder}: train it (rerun the experiment) first."
            )
        return keras.models.load_model(self.model_path, **kwargs)

    def finish(self, model, record: Mapping | None = None) -> None:
        """Saves `model` (optional: `None` for a run that keeps only figures),
        then its `record`, each whole or not at all; the record marks the run
        finished. The training backup, no longer needed, is then removed."""
        if model is not None:
            files.atomic_save_model(model, self.model_path)
        files.atomic_write_json(self.folder / RECORD_FILE, dict(record or {}))
        if self.backup_dir.is_dir():
            # Inside a claimed run folder, under the name this class gave it.
            shutil.rmtree(self.backup_dir)

    def update_record(self, **values) -> dict:
        """Adds `values` to a finished run's record (e.g. a later evaluation)."""
        record = {**self.record, **values}
        files.atomic_write_json(self.folder / RECORD_FILE, record)
        return record

    def get_or_train(self, train: Callable[[ModelRun], tuple[object, Mapping]]):
        """Loads the finished model, or calls `train(self) -> (model, record)`.

        Returns:
            `(model, record)`.
        """
        if self.finished:
            return self.load(), self.record
        model, record = train(self)
        self.finish(model, record)
        return model, self.record

    def get_or_measure(self, measure: Callable[[ModelRun], Mapping]) -> dict:
        """The stored record of a finished run, or `measure(self)`'s, stored.

        For runs that produce figures but no model (benchmarks, evaluations):
        a finished run is reused, with one line saying so; otherwise
        `measure(self)` runs (it may write its files below `self.folder`) and
        its record is stored with `finish(None, record)`.

        Args:
            measure: Called with this run when it is not finished; returns the
                record (a mapping of JSON values).

        Returns:
            The record as stored (JSON values: tuples come back as lists).

        Raises:
            TypeError: when `measure` returns something other than a mapping.

        Example:

        >>> import tempfile
        >>> folder = tempfile.mkdtemp() + "/bench"
        >>> for _ in range(2):
        ...     with RunFolder(folder) as runs:
        ...         run = runs.model("throughput", {"batch_size": 64})
        ...         record = run.get_or_measure(lambda run: {"per_second": 812.5})
        [throughput] measured earlier with these settings: reusing .../record.json (...)
        >>> record
        {'per_second': 812.5}
        """
        if self.finished:
            record = self.record
            when = f" ({record['date']})" if "date" in record else ""
            print(
                f"[{self.name}] measured earlier with these settings{when}: reusing "
                f"{self.folder / RECORD_FILE} (use another output folder to measure "
                "again)",
                flush=True,
            )
            return record
        record = measure(self)
        if not isinstance(record, Mapping):
            raise TypeError(
                f"`measure` must return the run's record as a mapping (e.g. a dict "
                f"of figures), got {type(record).__name__}."
            )
        self.finish(None, record)
        return self.record


class RunFolder:
    """The folder of one experiment's runs (see the module docstring).

    Args:
        root: The folder; created if missing. A folder holding files that
            keras-kd did not write is refused.
        lock: Hold `running.pid` while open (default), so that two processes
            cannot train into one folder.

    Raises:
        keras_kd.files.FolderNotOwnedError: for a folder that is not a run
            folder.
        RunFolderBusyError: when another live process holds the folder.
    """

    def __init__(self, root: str | os.PathLike, *, lock: bool = True):
        self.root = files.claim_folder(root, kind=RUN_KIND)
        self._lock = lock
        self._locked = False

    def __enter__(self) -> RunFolder:
        if self._lock:
            self._acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Releases the folder's lock."""
        if self._locked:
            files.remove_owned(self.root, RUN_KIND, [LOCK_FILE])
            self._locked = False

    def _acquire(self) -> None:
        lock = self.root / LOCK_FILE
        if lock.exists():
            holder = _lock_holder(lock.read_text())
            if holder is not None and holder != os.getpid():
                raise RunFolderBusyError(
                    f"Another keras-kd process (pid {holder}) is running in "
                    f"{self.root}. Wait for it to end, or use another output folder. "
                    f"(If no such process runs, delete {lock}.)"
                )
        files.atomic_write_text(lock, f"{os.getpid()} {_start_time(os.getpid())}\n")
        self._locked = True

    def has_model(self, name: str) -> bool:
        """Whether the folder holds a model `name` (finished or started)."""
        return (self.root / "models" / name / SETTINGS_FILE).exists()

    def model(self, name: str, settings: Mapping) -> ModelRun:
        """The run of model `name` trained with `settings`.

        Args:
            name: A file-name-safe name, e.g. `"distilled_800_T20-s0"`.
            settings: Every setting that shapes this model (architecture, data,
                schedule, seed, distillation weights); JSON values.

        Returns:
            A `ModelRun` (check `.finished`).

        Raises:
            RunSettingsError: when `name` exists in the folder with other
                settings; the message names each difference.
        """
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"Run names must be plain file names, got {name!r}.")
        wanted = canonical_settings(settings)
        folder = self.root / "models" / name
        settings_path = folder / SETTINGS_FILE
        if settings_path.exists():
            stored = json.loads(settings_path.read_text())
            if stored != wanted:
                lines = "\n  ".join(settings_differences(stored, wanted))
                raise RunSettingsError(
                    f"The model {name!r} in {self.root} was trained (or started) with "
                    f"other settings:\n  {lines}\nIts figures would not describe the "
                    "settings asked for now, so it is not reused. Use another output "
                    "folder, or set the settings back."
                )
        else:
            files.atomic_write_json(settings_path, wanted)
        return ModelRun(folder, name, wanted)

    def write_results(
        self,
        rows: Sequence[Mapping],
        *,
        title: str,
        columns: Sequence[str] | None = None,
        notes: str = "",
        curves: Mapping[str, Sequence[float]] | None = None,
        curve_label: str = "",
        extra: Mapping | None = None,
    ) -> dict[str, Path]:
        """Writes `results.md`, `results.json` and (with curves) `curves.png`.

        Args:
            rows: One mapping per table row.
            title: The Markdown heading.
            columns: Column order (default: keys in order of appearance).
            notes: Markdown placed under the table.
            curves: Per-epoch series by name, plotted into `curves.png`.
            curve_label: The y-axis label of the plot.
            extra: More JSON values to store beside the rows.

        Returns:
            The paths written, by kind (`"markdown"`, `"json"`, `"png"`).
        """
        paths = {}
        text = f"# {title}\n\n" + reports.markdown_table(rows, columns)
        if notes:
            text += "\n" + notes.rstrip() + "\n"
        paths["markdown"] = files.atomic_write_text(self.root / "results.md", text)
        payload = {"rows": list(rows), **dict(extra or {})}
        if curves:
            payload["curves"] = {k: list(v) for k, v in curves.items()}
        paths["json"] = files.atomic_write_json(self.root / "results.json", payload)
        if curves:
            with files.atomic_path(self.root / "curves.png") as partial:
                reports.plot_curves(curves, partial, title=title, ylabel=curve_label)
            paths["png"] = self.root / "curves.png"
        return paths


def _start_time(pid: int) -> str:
    """When process `pid` started, in clock ticks since boot ("" if unknown).

    With the pid it identifies a process: a pid reused after a kill -9 has
    another start time, so a stale lock is not mistaken for a live run.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return fields[19] if len(fields) > 19 else ""


def _lock_holder(text: str) -> int | None:
    """The pid of the live process that wrote the lock `text`, or None if stale."""
    parts = text.split()
    try:
        pid = int(parts[0])
    except (IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    started = parts[1] if len(parts) > 1 else ""
    if started and _start_time(pid) not in ("", started):
        return None  # the pid now belongs to another process
    return pid


@dataclass(frozen=True)
class SeedSummary:
    """Mean and spread of one figure over seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        """The mean over the seeds (NaN for none)."""
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def spread(self) -> float:
        """Max - min over the seeds (0 for one seed)."""
        return max(self.values) - min(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (NaN for fewer than two seeds)."""
        if len(self.values) < 2:
            return math.nan
        mean = self.mean
        return math.sqrt(
            sum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1)
        )

    def format(self, digits: int = 2) -> str:
        """`"mean (v1 / v2 / ...)"`, or the single value for one seed.

        Example:

        >>> SeedSummary((59.44, 61.58)).format()
        '60.51 (59.44 / 61.58)'
        """
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f}"
        each = " / ".join(f"{v:.{digits}f}" for v in self.values)
        return f"{self.mean:.{digits}f} ({each})"


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Summarises one figure measured for several seeds.

    Example:

    >>> round(seed_summary([67.21, 67.36]).spread, 2)
    0.15
    """
    return SeedSummary(tuple(float(v) for v in values))
