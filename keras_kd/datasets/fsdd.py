"""The Free Spoken Digit Dataset (FSDD) as labelled log-mel frames.

FSDD holds 3,000 mono 8 kHz recordings of the digits 0-9 by 6 speakers, named
`{digit}_{speaker}_{take}.wav`. For the acoustic experiment of Hinton, Vinyals and
Dean (2015, sections 4 and 6) every 10 ms frame becomes one example: its features
are 40 log-mel coefficients (see `keras_kd.frontend`), its label the digit of its
utterance, or `SILENCE` when the frame is much quieter than the utterance's
loudest frame. Utterances are scored by summing frame log-probabilities
(`word_error_rate`).

Data come from `<data dir>/fsdd/recordings/*.wav`, with the data dir given by
`--data-dir` or `KERAS_KD_DATA_DIR`, or from `tensorflow-datasets`'
`spoken_digit` when online (`source="tfds"`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_kd import files
from keras_kd.datasets.location import DATA_DIR_VARIABLE, resolve_data_dir
from keras_kd.evaluation import accuracy
from keras_kd.frontend import LogMelSpectrogram, stack_context

SAMPLE_RATE = 8000
NUM_DIGITS = 10
SILENCE = 10  # class id of near-silent frames
NUM_CLASSES = NUM_DIGITS + 1
TEST_TAKES = 5  # the usual split: takes 0-4 are the test set, 5-49 training
DEFAULT_TEST_SPEAKERS = ("theo",)  # held out by the speaker split
DEFAULT_SILENCE_DB = 30.0
SPLITS = ("standard", "speaker")
# Validation sets carved out of the training recordings (`validation_split`):
# "takes" holds out takes 5-9 of every training speaker, "speaker" every take of
# `validation_speakers`; "none" keeps no validation set.
VALIDATION_TAKES = (5, 10)  # takes 5-9: the training takes next to the test takes
DEFAULT_VALIDATION_SPEAKERS = ("george",)  # first training speaker, alphabetically
VALIDATIONS = ("takes", "speaker", "none")
NORMALIZATIONS = ("global", "speaker", "none")
SOURCES = ("files", "tfds")

_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<take>\d+)\.wav$")


@dataclasses.dataclass(frozen=True)
class Recording:
    """One FSDD recording, identified by its file name.

    Args:
        digit: The spoken digit, 0-9.
        speaker: The speaker's name.
        take: The take number (0-49 in FSDD).
        path: The WAV file, or `None` for a recording held in memory (tfds).

    Example:

    >>> Recording(7, "theo", 3).name
    '7_theo_3.wav'
    """

    digit: int
    speaker: str
    take: int
    path: Path | None = None

    @property
    def name(self) -> str:
        """The FSDD file name, `{digit}_{speaker}_{take}.wav`."""
        return f"{self.digit}_{self.speaker}_{self.take}.wav"


def parse_recording_name(name: str | os.PathLike) -> Recording:
    """The digit, speaker and take encoded in an FSDD file name.

    Args:
        name: A file name or path such as `"3_jackson_12.wav"`.

    Returns:
        A `Recording` (with `path` set when `name` had a folder part or suffix).

    Raises:
        ValueError: when the name is not `{digit}_{speaker}_{take}.wav`.

    Example:

    >>> parse_recording_name("3_jackson_12.wav").take
    12
    """
    base = Path(name).name
    match = _NAME.match(base)
    if match is None:
        raise ValueError(
            f"{str(name)!r} is not an FSDD recording name: expected "
            "'{digit}_{speaker}_{take}.wav', e.g. '3_jackson_12.wav'. Rename the "
            "file or remove it from the recordings folder."
        )
    return Recording(
        int(match["digit"]), match["speaker"], int(match["take"]), Path(name)
    )


def recordings_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of FSDD WAV files under the configured data folder.

    Args:
        data_dir: The data root (holding `fsdd/`), the `fsdd` folder itself, or
            `None` to use `KERAS_KD_DATA_DIR`.

    Returns:
        The folder holding the `*.wav` files (`fsdd/recordings` in the usual layout,
        or the resolved folder itself when the WAV files lie directly in it).

    Raises:
        FileNotFoundError: when no data folder is configured or no WAV files are
            found.

    Example:

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())  # a data folder holding fsdd/recordings/
    >>> (root / "fsdd" / "recordings").mkdir(parents=True)
    >>> wav = tf.audio.encode_wav(tf.zeros([2400, 1]), SAMPLE_RATE).numpy()
    >>> _ = (root / "fsdd" / "recordings" / "0_theo_0.wav").write_bytes(wav)
    >>> recordings_dir(root)
    PosixPath('.../fsdd/recordings')
    """
    root = resolve_data_dir(data_dir, "fsdd")
    if root is None:
        raise FileNotFoundError(
            f"No data folder is configured for FSDD: pass --data-dir (data_dir=) or "
            f"set {DATA_DIR_VARIABLE} to the folder that holds fsdd/recordings/, or "
            "use source='tfds' when online."
        )
    for folder in (root / "recordings", root):
        if folder.is_dir() and any(folder.glob("*.wav")):
            return folder
    raise FileNotFoundError(
        f"No FSDD WAV files in {str(root)!r} or {str(root / 'recordings')!r}. Point "
        f"--data-dir or {DATA_DIR_VARIABLE} at the folder holding fsdd/recordings/."
    )


def list_recordings(data_dir: str | os.PathLike | None = None) -> list[Recording]:
    """All FSDD recordings in the data folder, sorted by speaker, digit and take.

    Args:
        data_dir: As for `recordings_dir`.

    Returns:
        One `Recording` per `*.wav` file.

    Raises:
        FileNotFoundError: as for `recordings_dir`.
        ValueError: for a WAV file whose name is not an FSDD name.

    Example:

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp(), "fsdd", "recordings")
    >>> folder.mkdir(parents=True)
    >>> wav = tf.audio.encode_wav(tf.zeros([2400, 1]), SAMPLE_RATE).numpy()
    >>> for name in ["1_theo_7.wav", "0_theo_0.wav", "0_george_3.wav"]:
    ...     _ = (folder / name).write_bytes(wav)
    >>> [r.name for r in list_recordings(folder.parent)]
    ['0_george_3.wav', '0_theo_0.wav', '1_theo_7.wav']
    """
    folder = recordings_dir(data_dir)
    recordings = [parse_recording_name(path) for path in folder.glob("*.wav")]
    return sorted(recordings, key=lambda r: (r.speaker, r.digit, r.take))


def decode_wav(contents: bytes, source: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes 16-bit PCM WAV bytes into a mono float32 waveform in [-1, 1).

    Args:
        contents: The bytes of a WAV file.
        source: Where the bytes came from (a file name), for error messages.
        sample_rate: The sample rate the file must have.

    Returns:
        Float32 array `(samples,)`; several channels are averaged.

    Raises:
        ValueError: when the bytes are not a readable WAV file, hold no samples,
            or have another sample rate.

    Example:

    >>> wav = tf.audio.encode_wav(tf.fill([800, 1], 0.25), SAMPLE_RATE).numpy()
    >>> decode_wav(wav, "0_theo_0.wav")[:3]
    array([0.25, 0.25, 0.25], dtype=float32)
    >>> decode_wav(tf.audio.encode_wav(tf.zeros([800, 1]), 16000).numpy(), "16k.wav")
    Traceback (most recent call last):
    ...
    ValueError: 16k.wav: sample rate 16000 Hz, but FSDD features expect 8000 Hz. ...
    """
    if not contents:
        raise ValueError(f"{source}: the file is empty (0 bytes); remove or re-record it.")
    try:
        audio, rate = tf.audio.decode_wav(contents)
    except tf.errors.InvalidArgumentError as error:
        reason = error.message.split("]")[-1].split("[Op:")[0].strip() or error.message
        raise ValueError(
            f"{source}: not a readable 16-bit PCM WAV file ({reason}). Convert it, "
            "e.g. `sox in.wav -b 16 -r 8000 out.wav`, or remove it."
        ) from None
    rate = int(rate)
    if rate != sample_rate:
        raise ValueError(
            f"{source}: sample rate {rate} Hz, but FSDD features expect "
            f"{sample_rate} Hz. Resample it (e.g. `sox in.wav -r {sample_rate} out.wav`)."
        )
    samples = audio.numpy()
    if samples.size == 0:
        raise ValueError(f"{source}: the WAV file holds no samples; remove or re-record it.")
    return samples.mean(axis=1).astype(np.float32)


def read_wav(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Reads a mono 16-bit PCM WAV file (see `decode_wav`).

    Args:
        path: The WAV file.
        sample_rate: The sample rate the file must have.

    Returns:
        Float32 array `(samples,)` in [-1, 1).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: as for `decode_wav`, naming the file.

    Example:

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp(), "0_theo_0.wav")
    >>> _ = path.write_bytes(tf.audio.encode_wav(tf.zeros([2400, 1]), SAMPLE_RATE).numpy())
    >>> waveform = read_wav(path)
    >>> waveform.shape, waveform.dtype
    ((2400,), dtype('float32'))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WAV file {str(path)!r} does not exist.")
    return decode_wav(path.read_bytes(), str(path), sample_rate)


def split_recordings(
    recordings: Sequence[Recording],
    split: str = "standard",
    test_speakers: Sequence[str] = DEFAULT_TEST_SPEAKERS,
) -> tuple[list[Recording], list[Recording]]:
    """Splits recordings into training and test sets.

    Args:
        recordings: The recordings to split.
        split: `"standard"` (takes 0-4 of every speaker are the test set, takes
            5-49 training) or `"speaker"` (every take of `test_speakers` is the
            test set, the other speakers training).
        test_speakers: The held-out speakers of the `"speaker"` split.

    Returns:
        `(train, test)` lists, in the order of `recordings`.

    Raises:
        ValueError: for an unknown split, or held-out speakers not in the data.

    Example:

    >>> train, test = split_recordings([Recording(1, "a", 0), Recording(1, "a", 9)])
    >>> [r.take for r in test]
    [0]
    """
    if split == "standard":
        is_test = [r.take < TEST_TAKES for r in recordings]
    elif split == "speaker":
        is_test = _of_speakers(recordings, test_speakers, "test_speakers", "speakers of the data")
    else:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    return _partition(recordings, is_test)


def _of_speakers(recordings, speakers, argument: str, role: str) -> list[bool]:
    """Which recordings are by `speakers`; every speaker must occur in them."""
    present = {r.speaker for r in recordings}
    missing = sorted(set(speakers) - present)
    if missing or not speakers:
        raise ValueError(
            f"`{argument}` {list(speakers)!r} must name {role}; "
            f"{missing or 'none given'} not among {sorted(present)}."
        )
    return [r.speaker in set(speakers) for r in recordings]


def _partition(recordings, held) -> tuple[list[Recording], list[Recording]]:
    """(recordings not held, recordings held), each in the original order."""
    kept = [r for r, h in zip(recordings, held, strict=True) if not h]
    return kept, [r for r, h in zip(recordings, held, strict=True) if h]


def validation_split(
    train: Sequence[Recording],
    validation: str = "takes",
    validation_speakers: Sequence[str] = DEFAULT_VALIDATION_SPEAKERS,
) -> tuple[list[Recording], list[Recording]]:
    """Carves a validation set out of the training recordings only.

    The test recordings are never looked at, so choices made on the validation
    set (a temperature, say) leave the test set untouched.

    Args:
        train: The training recordings of a split (see `split_recordings`).
        validation: `"takes"` (takes 5-9 of every training speaker, the same share
            of each speaker and digit), `"speaker"` (every take of
            `validation_speakers`, an unseen speaker like the speaker split's test
            set) or `"none"` (no validation set).
        validation_speakers: The held-out speakers of `validation="speaker"`.

    Returns:
        `(train, validation)` lists, in the order of `train`.

    Raises:
        ValueError: for an unknown `validation`, validation speakers not among the
            training speakers, or a split that leaves no training recordings.

    Example:

    >>> rest, held = validation_split([Recording(1, "a", 5), Recording(1, "a", 10)])
    >>> [r.take for r in held]
    [5]
    """
    if validation == "none":
        return list(train), []
    if validation == "takes":
        low, high = VALIDATION_TAKES
        is_held = [low <= r.take < high for r in train]
    elif validation == "speaker":
        is_held = _of_speakers(
            train, validation_speakers, "validation_speakers", "training speakers"
        )
    else:
        raise ValueError(f"`validation` must be one of {VALIDATIONS}, got {validation!r}.")
    rest, held = _partition(train, is_held)
    if not rest:
        raise ValueError(
            f"validation={validation!r} leaves no training recordings; choose another "
            "validation set."
        )
    return rest, held


def frame_labels(
    energy_db: np.ndarray, digit: int, silence_db: float = DEFAULT_SILENCE_DB
) -> np.ndarray:
    """Labels the frames of one utterance: its digit, or `SILENCE` when quiet.

    A frame is near-silent when its energy is more than `silence_db` decibels
    below the utterance's loudest frame.

    Args:
        energy_db: Frame energies in dB, `(frames,)`.
        digit: The utterance's digit, 0-9.
        silence_db: Threshold in dB below the loudest frame; > 0.

    Returns:
        Int32 array `(frames,)` of class ids in `0..NUM_DIGITS`.

    Raises:
        ValueError: for a digit outside 0-9 or a non-positive threshold.

    Example:

    >>> frame_labels(np.array([-50.0, -5.0, -20.0]), 4, silence_db=30.0).tolist()
    [10, 4, 4]
    """
    if not 0 <= int(digit) < NUM_DIGITS:
        raise ValueError(f"`digit` must be in 0..{NUM_DIGITS - 1}, got {digit!r}.")
    if not silence_db > 0:
        raise ValueError(
            f"`silence_db` must be a positive number of decibels, got {silence_db!r}."
        )
    energy_db = np.asarray(energy_db, dtype=np.float32)
    labels = np.full(energy_db.shape, int(digit), dtype=np.int32)
    if energy_db.size:
        labels[energy_db < energy_db.max() - silence_db] = SILENCE
    return labels


@dataclasses.dataclass
class FrameSet:
    """Labelled frames of a set of utterances, concatenated in utterance order.

    Args:
        features: Float32 `(frames, bins)` log-mel features (normalized as loaded).
        labels: Int32 `(frames,)` class ids: digits 0-9 or `SILENCE`.
        utterance: Int32 `(frames,)` index of each frame's utterance in
            `recordings`.
        recordings: The utterances, in order.

    Example:

    >>> frames = FrameSet(np.zeros([3, 2], np.float32), np.array([1, 1, 10]),
    ...                   np.array([0, 0, 0]), [Recording(1, "a", 0)])
    >>> frames.windows(1, 1).shape
    (3, 6)
    """

    features: np.ndarray
    labels: np.ndarray
    utterance: np.ndarray
    recordings: list[Recording]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def digits(self) -> np.ndarray:
        """Int32 `(utterances,)`: the digit of each utterance."""
        return np.array([r.digit for r in self.recordings], dtype=np.int32)

    @property
    def speech(self) -> np.ndarray:
        """Bool `(frames,)`: frames not labelled `SILENCE` (an energy decision)."""
        return self.labels != SILENCE

    def windows(self, left: int, right: int) -> np.ndarray:
        """Context windows of every frame, never crossing an utterance boundary.

        Args:
            left: Frames of context before each frame.
            right: Frames of context after each frame.

        Returns:
            Float32 `(frames, (left + 1 + right) * bins)`, as
            `keras_kd.frontend.ContextWindow` computes per utterance.
        """
        bounds = np.flatnonzero(np.diff(self.utterance)) + 1
        parts = np.split(self.features, bounds)
        return np.concatenate([stack_context(p, left, right) for p in parts], axis=0)


@dataclasses.dataclass
class FsddFrames:
    """The training and test frames of one split, with their normalization.

    Args:
        train: Training `FrameSet`.
        test: Test `FrameSet`.
        mean: Float32 `(bins,)` global mean of the raw training features.
        variance: Float32 `(bins,)` global variance of the raw training features
            (with `mean`, what a `keras.layers.Normalization` in an exported model
            needs for `normalization="global"`).
        config: The options the frames were made with.
        validation: Validation `FrameSet` carved from the training recordings
            (`validation_split`), or `None`.
    """

    train: FrameSet
    test: FrameSet
    mean: np.ndarray
    variance: np.ndarray
    config: dict
    validation: FrameSet | None = None


def _tfds_recordings(data_dir) -> list[tuple[Recording, np.ndarray]]:
    """Recordings and waveforms of tfds' `spoken_digit` (downloads when online)."""
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(
            "spoken_digit", split="train", data_dir=data_dir, download=True
        )
    except Exception as error:  # noqa: BLE001 - tfds raises many kinds offline
        raise FileNotFoundError(
            "tensorflow-datasets could not load 'spoken_digit' "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). It needs "
            "the internet on first use; offline, use source='files' with --data-dir "
            f"or {DATA_DIR_VARIABLE} pointing at a copy of FSDD."
        ) from None
    items = []
    for example in dataset.as_numpy_iterator():
        filename = example["audio/filename"].decode()
        recording = dataclasses.replace(parse_recording_name(filename), path=None)
        audio = example["audio"].astype(np.float32)
        scale = 32768.0 if np.abs(audio).max(initial=0.0) > 1.0 else 1.0
        items.append((recording, audio / scale))
    return sorted(items, key=lambda item: (item[0].speaker, item[0].digit, item[0].take))


def _fingerprint(recordings: Sequence[Recording], frontend: LogMelSpectrogram) -> str:
    entries = []
    for r in recordings:
        stat = r.path.stat() if r.path is not None else None
        entries.append([r.name, stat.st_size if stat else 0, int(stat.st_mtime) if stat else 0])
    config = {k: v for k, v in frontend.get_config().items() if k not in ("name", "trainable", "dtype")}
    blob = json.dumps({"frontend": config, "files": entries}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_verbose(verbose) -> None:
    if verbose not in (0, 1, 2):
        raise ValueError(
            "`verbose` must be 0 (silent), 1 (progress bar) or 2 (one line), "
            f"got {verbose!r}."
        )


def extract_features(
    recordings: Sequence[Recording],
    load_waveform: Callable[[Recording], np.ndarray],
    frontend: LogMelSpectrogram,
    cache_dir: str | os.PathLike | None = None,
    *,
    verbose: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Log-mel features and frame energies of each recording, cached on disk.

    Args:
        recordings: The recordings.
        load_waveform: Returns a recording's float32 waveform.
        frontend: The `LogMelSpectrogram` to apply.
        cache_dir: Folder for an `.npz` cache keyed by the front-end settings and
            the files' names, sizes and times; `None` for no cache. The file is
            written whole or not at all, and a damaged one is computed again
            (with a warning) and replaced.
        verbose: Progress of the feature extraction: 0 silent, 1 a Keras
            progress bar (default), 2 one line when done.

    Returns:
        `(features, energies)`: per recording, float32 `(frames, bins)` and
        `(frames,)` in dB.

    Raises:
        ValueError: for a recording shorter than one analysis window, or a
            `verbose` other than 0, 1 or 2.

    Example:

    >>> tone = np.sin(np.arange(2400, dtype=np.float32) / 4) / 2  # 0.3 s at 8 kHz
    >>> feats, energy = extract_features([Recording(0, "theo", 0)], lambda r: tone,
    ...                                  LogMelSpectrogram(sample_rate=SAMPLE_RATE),
    ...                                  verbose=0)
    >>> feats[0].shape, energy[0].shape  # 28 frames of 10 ms, 40 mel bins
    ((28, 40), (28,))
    """
    _check_verbose(verbose)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"fsdd-features-{_fingerprint(recordings, frontend)}.npz"
        stored = _read_feature_cache(cache, len(recordings), frontend.num_mel_bins)
        if stored is not None:
            return stored

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def analyse(waveform):
        batch = waveform[None]
        return frontend(batch)[0], frontend.frame_energy_db(batch)[0]

    features, energies = [], []
    progress = keras.utils.Progbar(
        len(recordings), verbose=verbose, unit_name="recording"
    )
    for i, recording in enumerate(recordings):
        waveform = load_waveform(recording)
        if len(waveform) < frontend.window:
            raise ValueError(
                f"{recording.path or recording.name}: {len(waveform)} samples is "
                f"shorter than one {frontend.window_ms} ms analysis window "
                f"({frontend.window} samples); remove the file."
            )
        mel, energy = analyse(tf.constant(waveform))
        features.append(mel.numpy())
        energies.append(energy.numpy())
        if (i + 1) % 100 == 0 or i + 1 == len(recordings):
            progress.update(i + 1)
    if cache is not None:
        with files.atomic_path(cache) as partial:
            np.savez(
                partial,
                features=np.concatenate(features),
                energy=np.concatenate(energies),
                lengths=np.array([len(f) for f in features]),
            )
    return features, energies


def _read_feature_cache(
    path: Path, recordings: int, bins: int
) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """The cached `(features, energies)` at `path`, or `None` to rebuild them.

    A missing file gives `None`; so does a damaged one (truncated by a killed
    run of an older version, or not the arrays this loader writes), with a
    warning: it is rebuilt and replaced as a whole.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            features, energy = stored["features"], stored["energy"]
            lengths = stored["lengths"]
        consistent = (
            lengths.shape == (recordings,)
            and features.ndim == 2
            and features.shape[1] == bins
            and len(features) == len(energy) == int(lengths.sum())
        )
        if not consistent:
            raise ValueError("its arrays do not match the recordings")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        warnings.warn(
            f"The FSDD feature cache {path} is damaged ({type(error).__name__}: "
            f"{error}); computing the features again and replacing it.",
            stacklevel=3,
        )
        return None
    bounds = np.cumsum(lengths)[:-1]
    return np.split(features, bounds), np.split(energy, bounds)


def _frame_set(recordings, features, energies, silence_db) -> FrameSet:
    labels = [frame_labels(e, r.digit, silence_db) for r, e in zip(recordings, energies, strict=True)]
    utterance = [np.full(len(f), i, np.int32) for i, f in enumerate(features)]
    return FrameSet(
        features=np.concatenate(features).astype(np.float32),
        labels=np.concatenate(labels),
        utterance=np.concatenate(utterance),
        recordings=list(recordings),
    )


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    variance = features.var(axis=0)
    return mean.astype(np.float32), np.maximum(variance, 1e-8).astype(np.float32)


def normalize(
    train: FrameSet, test: FrameSet, normalization: str, validation: FrameSet | None = None
) -> None:
    """Normalizes the features of the sets in place to zero mean, unit variance.

    `"global"` uses the mean and variance of all training frames. `"speaker"`
    uses each speaker's own statistics: from that speaker's training frames when
    there are any, else (a held-out speaker) from the speaker's own held-out
    (test or validation) frames, which needs their audio but no labels. `"none"`
    leaves the features as they are.

    Args:
        train: Training frames.
        test: Test frames.
        normalization: `"global"`, `"speaker"` or `"none"`.
        validation: Validation frames, normalized like the test frames; optional.

    Raises:
        ValueError: for another `normalization`.

    Example:

    >>> ann, bob = Recording(1, "ann", 5), Recording(1, "bob", 0)
    >>> train = FrameSet(np.array([[1.0], [3.0]]), np.array([1, 1]), np.array([0, 0]), [ann])
    >>> test = FrameSet(np.array([[10.0], [20.0]]), np.array([1, 1]), np.array([0, 0]), [bob])
    >>> normalize(train, test, "speaker")  # bob, unseen in training: his own statistics
    >>> train.features.ravel().tolist(), test.features.ravel().tolist()
    ([-1.0, 1.0], [-1.0, 1.0])
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}."
        )
    if normalization == "none":
        return
    held = [test] + ([validation] if validation is not None else [])
    if normalization == "global":
        mean, variance = _moments(train.features)
        for frames in (train, *held):
            frames.features = (frames.features - mean) / np.sqrt(variance)
        return

    def speaker_of_frames(frames):
        names = np.array([r.speaker for r in frames.recordings])
        return names[frames.utterance] if len(frames) else names

    train_speakers = speaker_of_frames(train)
    held_speakers = [speaker_of_frames(frames) for frames in held]
    stats = {}
    for speaker in np.unique(np.concatenate([train_speakers, *held_speakers])):
        source = train.features[train_speakers == speaker]
        if not len(source):
            source = np.concatenate(
                [f.features[s == speaker] for f, s in zip(held, held_speakers, strict=True)]
            )
        stats[speaker] = _moments(source)
    for frames, speakers in ((train, train_speakers), *zip(held, held_speakers, strict=True)):
        for speaker, (mean, variance) in stats.items():
            rows = speakers == speaker
            frames.features[rows] = (frames.features[rows] - mean) / np.sqrt(variance)


def load_fsdd(
    data_dir: str | os.PathLike | None = None,
    *,
    split: str = "standard",
    test_speakers: Sequence[str] = DEFAULT_TEST_SPEAKERS,
    normalization: str = "speaker",
    silence_db: float = DEFAULT_SILENCE_DB,
    frontend: LogMelSpectrogram | None = None,
    cache_dir: str | os.PathLike | None = None,
    source: str = "files",
    select: Callable[[Recording], bool] | None = None,
    validation: str = "none",
    validation_speakers: Sequence[str] = DEFAULT_VALIDATION_SPEAKERS,
    verbose: int = 1,
) -> FsddFrames:
    """FSDD as labelled, normalized log-mel frames of a training and a test set.

    Args:
        data_dir: Data root (see `recordings_dir`); `None` uses
            `KERAS_KD_DATA_DIR`. With `source="tfds"`, tfds' data folder.
        split: `"standard"` or `"speaker"` (see `split_recordings`).
        test_speakers: Held-out speakers of the `"speaker"` split.
        normalization: `"speaker"` (default), `"global"` or `"none"` (see
            `normalize`).
        silence_db: Frames this many dB below the utterance's loudest frame are
            labelled `SILENCE`.
        frontend: The `LogMelSpectrogram`; default 25 ms / 10 ms / 40 mel bins
            at 8 kHz.
        cache_dir: Folder to cache the log-mel features in; `None` for none.
        source: `"files"` (WAV files in the data folder) or `"tfds"`.
        select: Keeps only the recordings for which it returns True (for small
            runs).
        validation: `"none"` (default), `"takes"` or `"speaker"`: a validation
            set carved out of the training recordings (see `validation_split`);
            the training set is what remains.
        validation_speakers: Held-out training speakers of
            `validation="speaker"`.
        verbose: Progress of the feature extraction (none when cached): 0
            silent, 1 a Keras progress bar (default), 2 one line when done.

    Returns:
        An `FsddFrames` with `train` and `test` frame sets, and `validation`
        unless `validation="none"`.

    Raises:
        FileNotFoundError: when the data cannot be found (or, for tfds, loaded).
        ValueError: for an unknown option or an unreadable recording.

    Example:

    A tiny stand-in for FSDD (a 0.3 s tone per file); with the real data,
    `load_fsdd(cache_dir="runs/cache")` reads the folder of `KERAS_KD_DATA_DIR`.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp(), "fsdd", "recordings")
    >>> folder.mkdir(parents=True)
    >>> for digit, take in [(0, 0), (0, 5), (1, 0), (1, 5)]:  # takes 0-4 are test
    ...     tone = tf.sin(tf.range(2400.0) * (digit + 1) / 8)[:, None] / 2
    ...     wav = tf.audio.encode_wav(tone, SAMPLE_RATE).numpy()
    ...     _ = (folder / f"{digit}_theo_{take}.wav").write_bytes(wav)
    >>> data = load_fsdd(folder.parent.parent, split="standard", verbose=0)
    >>> [r.name for r in data.test.recordings]
    ['0_theo_0.wav', '1_theo_0.wav']
    >>> data.train.windows(5, 5).shape  # 56 frames, 11 frames x 40 bins each
    (56, 440)
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}."
        )
    if validation not in VALIDATIONS:
        raise ValueError(f"`validation` must be one of {VALIDATIONS}, got {validation!r}.")
    _check_verbose(verbose)
    frontend = frontend or LogMelSpectrogram(sample_rate=SAMPLE_RATE)
    if source == "files":
        recordings = list_recordings(data_dir)
        waveforms = None
    else:
        items = _tfds_recordings(None if data_dir is None else str(data_dir))
        recordings = [item[0] for item in items]
        waveforms = {r.name: w for r, w in items}
    if select is not None:
        recordings = [r for r in recordings if select(r)]
    if not recordings:
        raise ValueError("No recordings are left after `select`; loosen the selection.")

    def load_waveform(recording):
        if waveforms is not None:
            return waveforms[recording.name]
        return read_wav(recording.path, frontend.sample_rate)

    features, energies = extract_features(
        recordings, load_waveform, frontend, cache_dir, verbose=verbose
    )
    by_name = {r.name: i for i, r in enumerate(recordings)}
    train_recordings, test_recordings = split_recordings(recordings, split, test_speakers)
    train_recordings, validation_recordings = validation_split(
        train_recordings, validation, validation_speakers
    )

    def frame_set(part):
        index = [by_name[r.name] for r in part]
        return _frame_set(
            part, [features[i] for i in index], [energies[i] for i in index], silence_db
        )

    train, test = frame_set(train_recordings), frame_set(test_recordings)
    held = frame_set(validation_recordings) if validation != "none" else None
    mean, variance = _moments(train.features)
    normalize(train, test, normalization, validation=held)
    config = {
        "split": split,
        "test_speakers": list(test_speakers) if split == "speaker" else [],
        "validation": validation,
        "validation_speakers": list(validation_speakers) if validation == "speaker" else [],
        "normalization": normalization,
        "silence_db": float(silence_db),
        "source": source,
        "frontend": {
            k: v for k, v in frontend.get_config().items() if k not in ("name", "trainable", "dtype")
        },
    }
    return FsddFrames(train, test, mean, variance, config, validation=held)


def utterance_scores(
    frame_logits: np.ndarray, frames: FrameSet, speech_only: bool = True
) -> np.ndarray:
    """Per-utterance digit scores: the sum of frame log-probabilities of each digit.

    Each frame's logits over `NUM_CLASSES` are turned into log-probabilities; the
    digit columns are summed over the utterance's frames. With `speech_only`, only
    frames that are not near-silent by energy (`frames.speech`, decided from the
    audio alone) count, unless an utterance has none.

    Args:
        frame_logits: Float `(frames, NUM_CLASSES)` logits (or log-probabilities)
            in the order of `frames`.
        frames: The `FrameSet` the logits belong to.
        speech_only: Whether to leave out near-silent frames.

    Returns:
        Float64 `(utterances, NUM_DIGITS)`.

    Raises:
        ValueError: when the logits do not match the frames.

    Example:

    >>> frames = FrameSet(np.zeros([3, 1]), np.array([2, SILENCE, 7]),
    ...                   np.array([0, 0, 1]), [Recording(2, "a", 0), Recording(7, "a", 0)])
    >>> logits = 5.0 * np.eye(NUM_CLASSES)[[2, SILENCE, 7]]  # confident frames
    >>> scores = utterance_scores(logits, frames)
    >>> scores.shape, scores.argmax(axis=1)  # the recognised digits
    ((2, 10), array([2, 7]))
    """
    frame_logits = np.asarray(frame_logits, dtype=np.float64)
    if frame_logits.shape != (len(frames), NUM_CLASSES):
        raise ValueError(
            f"`frame_logits` must have shape ({len(frames)}, {NUM_CLASSES}) to match "
            f"the frames, got {frame_logits.shape}."
        )
    shifted = frame_logits - frame_logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    digits = log_probs[:, :NUM_DIGITS]
    count = len(frames.recordings)
    keep = frames.speech if speech_only else np.ones(len(frames), bool)
    has_speech = np.bincount(frames.utterance[keep], minlength=count) > 0
    keep = keep | ~has_speech[frames.utterance]
    scores = np.zeros((count, NUM_DIGITS))
    np.add.at(scores, frames.utterance[keep], digits[keep])
    return scores


def word_error_rate(frame_logits: np.ndarray, frames: FrameSet) -> float:
    """Fraction of utterances whose best-scoring digit is wrong.

    Each utterance is one word, so the word error rate is the utterance error
    rate of `utterance_scores`.

    Args:
        frame_logits: Float `(frames, NUM_CLASSES)` in the order of `frames`.
        frames: The `FrameSet` the logits belong to.

    Returns:
        The error rate in [0, 1].

    Example:

    >>> frames = FrameSet(np.zeros([2, 1]), np.array([2, 7]), np.array([0, 1]),
    ...                   [Recording(2, "a", 0), Recording(7, "a", 0)])
    >>> logits = 5.0 * np.eye(NUM_CLASSES)[[2, 3]]  # the second word is heard as 3
    >>> word_error_rate(logits, frames)
    0.5
    """
    predicted = utterance_scores(frame_logits, frames).argmax(axis=1)
    return float(np.mean(predicted != frames.digits))


def frame_accuracy(frame_logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of frames whose highest logit is their label (silence included).

    The frame-level name of `keras_kd.evaluation.accuracy`.

    Args:
        frame_logits: Float `(frames, classes)`.
        labels: Int `(frames,)`.

    Returns:
        The accuracy in [0, 1].

    Raises:
        ValueError: when the logits and labels do not match, or there are no
            frames.

    Example:

    >>> frame_accuracy(np.array([[2.0, 1.0], [0.0, 1.0]]), np.array([0, 0]))
    0.5
    """
    return accuracy(frame_logits, labels)


_RENAMED = {"normalise": "normalize", "NORMALISATIONS": "NORMALIZATIONS"}


def __getattr__(name: str):
    if name in _RENAMED:
        raise AttributeError(
            f"keras_kd.datasets.fsdd.{name} was renamed {_RENAMED[name]} in keras-kd "
            "0.2.0 (American spelling for every API name; the argument is "
            "`normalization`)."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
