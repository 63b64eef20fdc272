"""Acoustic front end in TensorFlow ops: log-mel filterbanks and context windows.

Everything here is a Keras layer (or a NumPy twin used to prepare training data),
so the same computation can be saved and exported with a model that takes raw
waveforms. The defaults follow section 4 of Hinton, Vinyals and Dean (2015): 25 ms
windows every 10 ms, 40 log-mel filterbank coefficients, and frames stacked with
their neighbours into a context window.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

# Added to the mel energies before the log, so that digital silence gives a finite
# (very low) value instead of -inf.
LOG_FLOOR = 1e-6


def frame_size(sample_rate: int, milliseconds: float, argument: str) -> int:
    """The number of samples in `milliseconds` of audio at `sample_rate`.

    Args:
        sample_rate: Samples per second, > 0.
        milliseconds: Duration in milliseconds, > 0.
        argument: Name of the argument being converted, for the error message.

    Returns:
        `round(sample_rate * milliseconds / 1000)`, at least 1.

    Raises:
        ValueError: when the duration is not positive or rounds to 0 samples.

    Example:

    >>> frame_size(8000, 25.0, "window_ms")
    200
    """
    samples = int(round(sample_rate * milliseconds / 1000.0))
    if not milliseconds > 0 or samples < 1:
        raise ValueError(
            f"`{argument}` must be a positive duration of at least one sample "
            f"({1000.0 / sample_rate:.3f} ms at {sample_rate} Hz), got {milliseconds!r}."
        )
    return samples


def num_frames(num_samples: int, window: int, hop: int) -> int:
    """Frames of `window` samples every `hop` samples that fit in `num_samples`.

    Frames never run past the end of the signal (no padding), so a signal shorter
    than one window has no frames.

    Args:
        num_samples: Length of the signal.
        window: Samples per frame.
        hop: Samples between the starts of consecutive frames.

    Returns:
        `1 + (num_samples - window) // hop`, or 0 when `num_samples < window`.

    Example:

    >>> num_frames(8000, 200, 80)  # one second at 8 kHz, 25 ms / 10 ms
    98
    """
    if num_samples < window:
        return 0
    return 1 + (num_samples - window) // hop


@keras.saving.register_keras_serializable(package="keras_kd")
class LogMelSpectrogram(keras.layers.Layer):
    """Waveforms to log-mel filterbank energies, one row per 10 ms frame.

    Each frame of `window_ms` (Hann-windowed, zero-padded to a power-of-two FFT)
    gives a power spectrum; a bank of `num_mel_bins` triangular mel filters
    between `lower_hz` and `upper_hz` sums it into band energies, of which the
    natural log (plus `LOG_FLOOR`) is returned.

    Args:
        sample_rate: Sample rate of the input waveforms in Hz.
        window_ms: Frame length in milliseconds (25 in the paper).
        hop_ms: Frame advance in milliseconds (10 in the paper).
        num_mel_bins: Number of mel filterbank coefficients (40 in the paper).
        lower_hz: Lowest frequency covered by the filterbank.
        upper_hz: Highest frequency covered; `None` means the Nyquist frequency.
        **kwargs: Passed on to `keras.layers.Layer`.

    Raises:
        ValueError: for a non-positive rate or duration, or a frequency range that
            is empty or exceeds the Nyquist frequency.

    Example:

    >>> layer = LogMelSpectrogram(sample_rate=8000)
    >>> layer(tf.zeros([2, 8000])).shape  # 1 s of audio: 98 frames of 40
    TensorShape([2, 98, 40])
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        window_ms: float = 25.0,
        hop_ms: float = 10.0,
        num_mel_bins: int = 40,
        lower_hz: float = 20.0,
        upper_hz: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not int(sample_rate) > 0:
            raise ValueError(f"`sample_rate` must be a positive integer, got {sample_rate!r}.")
        if not int(num_mel_bins) > 0:
            raise ValueError(f"`num_mel_bins` must be a positive integer, got {num_mel_bins!r}.")
        nyquist = sample_rate / 2.0
        top = nyquist if upper_hz is None else float(upper_hz)
        if not 0.0 <= lower_hz < top <= nyquist:
            raise ValueError(
                f"The filterbank range must satisfy 0 <= lower_hz < upper_hz <= "
                f"{nyquist} (the Nyquist frequency at {sample_rate} Hz), got "
                f"lower_hz={lower_hz!r}, upper_hz={upper_hz!r}."
            )
        self.sample_rate = int(sample_rate)
        self.window_ms = float(window_ms)
        self.hop_ms = float(hop_ms)
        self.num_mel_bins = int(num_mel_bins)
        self.lower_hz = float(lower_hz)
        self.upper_hz = None if upper_hz is None else float(upper_hz)
        self.window = frame_size(self.sample_rate, self.window_ms, "window_ms")
        self.hop = frame_size(self.sample_rate, self.hop_ms, "hop_ms")
        self.fft_length = 2 ** math.ceil(math.log2(self.window))
        self.mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=self.num_mel_bins,
            num_spectrogram_bins=self.fft_length // 2 + 1,
            sample_rate=self.sample_rate,
            lower_edge_hertz=self.lower_hz,
            upper_edge_hertz=top,
        )

    def call(self, waveforms):
        """Log-mel energies of `waveforms` `(batch, samples)`: `(batch, frames, bins)`."""
        waveforms = tf.cast(waveforms, tf.float32)
        stft = tf.signal.stft(
            waveforms,
            frame_length=self.window,
            frame_step=self.hop,
            fft_length=self.fft_length,
            window_fn=tf.signal.hann_window,
            pad_end=False,
        )
        power = tf.math.square(tf.math.abs(stft))
        mel = tf.tensordot(power, self.mel_matrix, axes=1)
        return tf.math.log(mel + LOG_FLOOR)

    def frame_energy_db(self, waveforms):
        """Energy of each (unwindowed) frame in decibels: `(batch, frames)`.

        Frames are the same as those of `call`, so row `i` describes frame `i` of
        the log-mel output. Used to find near-silent frames.

        Args:
            waveforms: Float tensor `(batch, samples)`.

        Returns:
            Float32 tensor `10 * log10(sum of squared samples + 1e-10)`.
        """
        frames = tf.signal.frame(
            tf.cast(waveforms, tf.float32), self.window, self.hop, pad_end=False
        )
        energy = tf.reduce_sum(tf.math.square(frames), axis=-1)
        return 10.0 * tf.math.log(energy + 1e-10) / math.log(10.0)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else num_frames(samples, self.window, self.hop)
        return (*input_shape[:-1], frames, self.num_mel_bins)

    def get_config(self):
        config = super().get_config()
        config.update(
            sample_rate=self.sample_rate,
            window_ms=self.window_ms,
            hop_ms=self.hop_ms,
            num_mel_bins=self.num_mel_bins,
            lower_hz=self.lower_hz,
            upper_hz=self.upper_hz,
        )
        return config


def context_indices(frames: int, left: int, right: int) -> np.ndarray:
    """Frame indices of each context window, repeating the edge frames.

    Args:
        frames: Number of frames in the utterance.
        left: Frames of context before the centre frame.
        right: Frames of context after the centre frame.

    Returns:
        Int array `(frames, left + 1 + right)`: row `t` is
        `clip(t - left, ..., t + right)` into `[0, frames - 1]`.

    Example:

    >>> context_indices(3, 1, 1).tolist()
    [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    """
    offsets = np.arange(-left, right + 1)
    return np.clip(np.arange(frames)[:, None] + offsets[None, :], 0, max(frames - 1, 0))


def stack_context(features: np.ndarray, left: int, right: int) -> np.ndarray:
    """NumPy twin of `ContextWindow` for one utterance `(frames, bins)`.

    Args:
        features: Array `(frames, bins)` of one utterance.
        left: Frames of context before each frame.
        right: Frames of context after each frame.

    Returns:
        Array `(frames, (left + 1 + right) * bins)`: frame `t - left` first, frame
        `t + right` last, edges repeated.

    Raises:
        ValueError: for negative context sizes or a non-2-D `features`.

    Example:

    >>> stack_context(np.array([[1.0], [2.0]]), 1, 0).tolist()
    [[1.0, 1.0], [1.0, 2.0]]
    """
    _check_context(left, right)
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(
            f"`features` must be 2-D (frames, bins), got shape {features.shape}."
        )
    index = context_indices(len(features), left, right)
    return features[index].reshape(len(features), -1)


def _check_context(left, right):
    for name, value in (("left", left), ("right", right)):
        if not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(
                f"`{name}` (frames of context) must be an integer >= 0, got {value!r}."
            )


@keras.saving.register_keras_serializable(package="keras_kd")
class ContextWindow(keras.layers.Layer):
    """Stacks each frame with its neighbours: `(b, t, d)` to `(b, t, (l+1+r) * d)`.

    Frame `t` of the output is the concatenation of input frames `t - left` to
    `t + right`; the first and last frames are repeated at the edges, so the
    number of frames is unchanged. The paper used 26 frames (`left=20`,
    `right=5`: the label belongs to the 21st frame).

    Args:
        left: Frames of context before the centre frame.
        right: Frames of context after the centre frame.
        **kwargs: Passed on to `keras.layers.Layer`.

    Raises:
        ValueError: for negative or non-integer context sizes.

    Example:

    >>> ContextWindow(left=2, right=1)(tf.zeros([1, 10, 40])).shape
    TensorShape([1, 10, 160])
    """

    def __init__(self, left: int = 5, right: int = 5, **kwargs):
        super().__init__(**kwargs)
        _check_context(left, right)
        self.left = int(left)
        self.right = int(right)

    @property
    def size(self) -> int:
        """Frames per window, `left + 1 + right`."""
        return self.left + 1 + self.right

    def call(self, features):
        """Context windows of `features` `(batch, frames, bins)`."""
        parts = []
        if self.left:
            parts.append(tf.repeat(features[:, :1], self.left, axis=1))
        parts.append(features)
        if self.right:
            parts.append(tf.repeat(features[:, -1:], self.right, axis=1))
        padded = tf.concat(parts, axis=1)
        windows = tf.signal.frame(padded, self.size, 1, axis=1)  # (b, t, size, d)
        shape = tf.shape(features)
        bins = features.shape[-1] if features.shape[-1] is not None else shape[2]
        return tf.reshape(windows, [shape[0], shape[1], self.size * bins])

    def compute_output_shape(self, input_shape):
        bins = input_shape[-1]
        return (*input_shape[:-1], None if bins is None else bins * self.size)

    def get_config(self):
        config = super().get_config()
        config.update(left=self.left, right=self.right)
        return config


def waveform_classifier(
    frame_net: keras.Model,
    mean,
    variance,
    *,
    left: int,
    right: int,
    frontend: LogMelSpectrogram | None = None,
    name: str = "waveform_classifier",
) -> keras.Model:
    """Wraps a frame classifier into a model from raw waveforms to frame logits.

    The model computes log-mel features, normalises them with a fixed global
    mean and variance, stacks context windows and applies `frame_net` to every
    frame, all in TensorFlow ops, so it saves (`.keras`) and exports (SavedModel,
    TFLite) as one graph. It reproduces training-time features made with
    `normalization="global"` (per-speaker statistics are not known at export).

    Args:
        frame_net: A model from `(left + 1 + right) * bins` features to logits.
        mean: Float `(bins,)` mean of the raw training features.
        variance: Float `(bins,)` variance of the raw training features.
        left: Context frames before each frame, as in training.
        right: Context frames after each frame, as in training.
        frontend: The `LogMelSpectrogram` used in training; default settings if
            `None`.
        name: Model name.

    Returns:
        A `keras.Model` mapping `(batch, samples)` to `(batch, frames, classes)`.

    Raises:
        ValueError: when `mean`/`variance` do not have one entry per mel bin.

    Example:

    >>> net = keras.Sequential([keras.Input((11 * 40,)), keras.layers.Dense(11)])
    >>> mean, variance = np.zeros(40), np.ones(40)  # FsddFrames.mean, .variance
    >>> model = waveform_classifier(net, mean, variance, left=5, right=5)
    >>> model(np.zeros((1, 8000), np.float32)).shape  # 1 s at 8 kHz: 98 frames
    TensorShape([1, 98, 11])
    """
    frontend = frontend or LogMelSpectrogram()
    mean = np.asarray(mean, np.float32)
    variance = np.asarray(variance, np.float32)
    for argument, value in (("mean", mean), ("variance", variance)):
        if value.shape != (frontend.num_mel_bins,):
            raise ValueError(
                f"`{argument}` must have shape ({frontend.num_mel_bins},), one entry per "
                f"mel bin, got {value.shape}. Pass the statistics of the raw training "
                "features (e.g. `FsddFrames.mean` / `.variance`)."
            )
    waveforms = keras.Input((None,), name="waveform")
    features = frontend(waveforms)
    features = keras.layers.Normalization(mean=mean, variance=variance)(features)
    windows = ContextWindow(left, right)(features)
    logits = keras.layers.TimeDistributed(frame_net)(windows)
    return keras.Model(waveforms, logits, name=name)
