"""Tests of the log-mel front end (`keras_kd.frontend`) and the FSDD loader."""

import math
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import frontend
from keras_kd.datasets import fsdd

RATE = 8000


def write_wav(path, samples, rate=RATE):
    """Writes int16 `samples` as a mono 16-bit WAV file."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.asarray(samples, "<i2").tobytes())
    return path


def tone(hz, seconds, amplitude=0.5, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * hz * t)


# ------------------------------------------------------------------ front end


@pytest.mark.parametrize("samples, expected", [(199, 0), (200, 1), (279, 1), (280, 2), (1000, 11)])
def test_num_frames_matches_layer_output(samples, expected):
    layer = frontend.LogMelSpectrogram()
    assert (layer.window, layer.hop, layer.fft_length) == (200, 80, 256)
    assert frontend.num_frames(samples, 200, 80) == expected
    if expected:
        assert layer(tf.zeros([1, samples])).shape == (1, expected, 40)


def test_tone_peaks_in_the_mel_band_centred_nearest_its_frequency():
    layer = frontend.LogMelSpectrogram(lower_hz=20.0)
    # Band k of tf.signal's filterbank peaks at the (k+1)-th of 42 points spaced
    # evenly on the mel scale m = 1127 ln(1 + f / 700) between 20 Hz and 4 kHz.
    mel = lambda f: 1127.0 * math.log1p(f / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(4000.0), 42)
    centres = 700.0 * (np.exp(edges[1:-1] / 1127.0) - 1.0)
    for hz in (300.0, 1000.0, 2500.0):
        features = layer(tone(hz, 0.2)[None].astype(np.float32)).numpy()[0]
        assert np.argmax(features.mean(axis=0)) == np.argmin(np.abs(centres - hz))


def test_silence_gives_the_log_floor_and_energy_is_hand_computed():
    layer = frontend.LogMelSpectrogram()
    silent = layer(tf.zeros([1, 400])).numpy()
    np.testing.assert_allclose(silent, math.log(frontend.LOG_FLOOR), rtol=1e-5)
    # A constant 0.1 over a 200-sample frame: energy 200 * 0.01 = 2, i.e. 3.0103 dB.
    energy = layer.frame_energy_db(tf.fill([1, 360], 0.1)).numpy()
    np.testing.assert_allclose(energy, [[10 * math.log10(2.0)] * 3], atol=1e-4)


def test_front_end_rejects_bad_settings():
    with pytest.raises(ValueError, match="upper_hz"):
        frontend.LogMelSpectrogram(upper_hz=5000.0)
    with pytest.raises(ValueError, match="window_ms"):
        frontend.LogMelSpectrogram(window_ms=0.0)
    with pytest.raises(ValueError, match="left"):
        frontend.ContextWindow(left=-1)


def test_context_window_layer_matches_hand_computed_and_numpy_twin():
    features = np.arange(8, dtype=np.float32).reshape(4, 2)  # frames [0,1],[2,3],...
    expected = np.array(
        [
            [0, 1, 0, 1, 0, 1, 2, 3],
            [0, 1, 0, 1, 2, 3, 4, 5],
            [0, 1, 2, 3, 4, 5, 6, 7],
            [2, 3, 4, 5, 6, 7, 6, 7],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(frontend.stack_context(features, 2, 1), expected)
    layer = frontend.ContextWindow(left=2, right=1)
    np.testing.assert_array_equal(layer(features[None]).numpy()[0], expected)
    assert layer.compute_output_shape((None, None, 2)) == (None, None, 8)
    restored = frontend.ContextWindow.from_config(layer.get_config())
    assert (restored.left, restored.right) == (2, 1)


def test_waveform_classifier_reproduces_training_features_and_round_trips(tmp_path):
    wav = tone(440.0, 0.3) + 0.01 * np.random.default_rng(0).normal(size=2400)
    layer = frontend.LogMelSpectrogram()
    raw = layer(wav[None].astype(np.float32)).numpy()[0]
    mean, variance = raw.mean(axis=0) + 0.5, raw.var(axis=0) + 1.0
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3 * 40,)), keras.layers.Dense(fsdd.NUM_CLASSES)])
    model = frontend.waveform_classifier(net, mean, variance, left=1, right=1)
    expected = net(frontend.stack_context((raw - mean) / np.sqrt(variance), 1, 1)).numpy()
    got = model(wav[None].astype(np.float32)).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    model.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again(wav[None].astype(np.float32)).numpy()[0], got, atol=1e-6)
    with pytest.raises(ValueError, match="one entry per mel bin"):
        frontend.waveform_classifier(net, mean[:3], variance, left=1, right=1)


# -------------------------------------------------------------------- WAV files


def test_read_wav_scales_int16_and_rejects_bad_files(tmp_path):
    good = write_wav(tmp_path / "1_a_0.wav", [16384, -8192, 0] * 100)
    np.testing.assert_allclose(fsdd.read_wav(good)[:3], [0.5, -0.25, 0.0])
    wrong_rate = write_wav(tmp_path / "rate.wav", np.zeros(300), rate=16000)
    with pytest.raises(ValueError, match=r"rate\.wav: sample rate 16000 Hz.*8000"):
        fsdd.read_wav(wrong_rate)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.wav: the file is empty"):
        fsdd.read_wav(empty)
    no_samples = write_wav(tmp_path / "nosamples.wav", [])
    with pytest.raises(ValueError, match=r"nosamples\.wav: the WAV file holds no samples"):
        fsdd.read_wav(no_samples)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a wav file at all")
    with pytest.raises(ValueError, match=r"garbage\.wav: not a readable 16-bit PCM WAV"):
        fsdd.read_wav(garbage)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        fsdd.read_wav(tmp_path / "missing.wav")


def test_parse_and_split_recordings():
    parsed = fsdd.parse_recording_name("dir/3_jackson_12.wav")
    assert (parsed.digit, parsed.speaker, parsed.take) == (3, "jackson", 12)
    with pytest.raises(ValueError, match="not an FSDD recording name"):
        fsdd.parse_recording_name("jackson_3.wav")
    recordings = [fsdd.Recording(d, s, t) for s in ("a", "b") for d in (0, 1) for t in (0, 4, 5, 49)]
    train, test = fsdd.split_recordings(recordings, "standard")
    assert {r.take for r in test} == {0, 4} and {r.take for r in train} == {5, 49}
    assert len(train) == len(test) == 8
    train, test = fsdd.split_recordings(recordings, "speaker", test_speakers=("b",))
    assert {r.speaker for r in test} == {"b"} and {r.speaker for r in train} == {"a"}
    with pytest.raises(ValueError, match="'zed'"):
        fsdd.split_recordings(recordings, "speaker", test_speakers=("zed",))
    with pytest.raises(ValueError, match="`split`"):
        fsdd.split_recordings(recordings, "random")


def test_validation_is_carved_from_training_recordings_only():
    recordings = [fsdd.Recording(d, s, t) for s in ("a", "b", "c") for d in (0, 1) for t in (0, 4, 5, 9, 10, 49)]
    train, test = fsdd.split_recordings(recordings, "standard")
    rest, held = fsdd.validation_split(train, "takes")
    assert {r.take for r in held} == {5, 9} and {r.take for r in rest} == {10, 49}
    assert len(held) == 12 and len(rest) == 12 and not set(held) & set(test)
    train, test = fsdd.split_recordings(recordings, "speaker", test_speakers=("c",))
    rest, held = fsdd.validation_split(train, "speaker", validation_speakers=("a",))
    assert {r.speaker for r in held} == {"a"} and {r.speaker for r in rest} == {"b"}
    assert fsdd.validation_split(train, "none") == (train, [])
    with pytest.raises(ValueError, match="'c'"):  # the test speaker is no training speaker
        fsdd.validation_split(train, "speaker", validation_speakers=("c",))
    with pytest.raises(ValueError, match="no training recordings"):
        fsdd.validation_split([fsdd.Recording(0, "a", 5)], "takes")
    with pytest.raises(ValueError, match="`validation`"):
        fsdd.validation_split(train, "random")


# ---------------------------------------------------------- labels and scores


def test_frame_labels_mark_frames_far_below_the_loudest_as_silence():
    energy = np.array([-60.0, -31.0, -29.0, 0.0, -5.0])
    np.testing.assert_array_equal(fsdd.frame_labels(energy, 7, 30.0), [10, 10, 7, 7, 7])
    np.testing.assert_array_equal(fsdd.frame_labels(energy, 7, 100.0), [7] * 5)
    with pytest.raises(ValueError, match="digit"):
        fsdd.frame_labels(energy, 10)


def _frames(features, speakers_of_utterances, utterance):
    recordings = [fsdd.Recording(0, s, i) for i, s in enumerate(speakers_of_utterances)]
    features = np.asarray(features, np.float32)
    return fsdd.FrameSet(features, np.zeros(len(features), np.int32), np.asarray(utterance), recordings)


def test_global_and_per_speaker_normalization_are_hand_computed():
    train = _frames([[1.0], [3.0], [10.0], [14.0]], ["a", "b"], [0, 0, 1, 1])
    test = _frames([[5.0], [12.0], [0.0], [4.0]], ["a", "b", "c"], [0, 1, 2, 2])
    fsdd.normalize(train, test, "speaker")
    # a: mean 2, std 1; b: mean 12, std 2; held-out c: its own test frames, mean 2, std 2.
    np.testing.assert_allclose(train.features[:, 0], [-1, 1, -1, 1], atol=1e-3)
    np.testing.assert_allclose(test.features[:, 0], [3, 0, -1, 1], atol=1e-3)
    train = _frames([[1.0], [3.0]], ["a"], [0, 0])
    test = _frames([[5.0]], ["a"], [0])
    fsdd.normalize(train, test, "global")
    np.testing.assert_allclose(test.features[:, 0], [3.0], atol=1e-3)
    with pytest.raises(ValueError, match="normalization"):
        fsdd.normalize(train, test, "per-utterance")
    # A validation set is normalized like the test set: by training statistics for
    # a training speaker, by its own frames for a held-out speaker (d: mean 3, std 1).
    train = _frames([[1.0], [3.0]], ["a"], [0, 0])
    test = _frames([[4.0]], ["a"], [0])
    validation = _frames([[2.0], [2.0], [4.0]], ["a", "d"], [0, 1, 1])
    fsdd.normalize(train, test, "speaker", validation=validation)
    np.testing.assert_allclose(validation.features[:, 0], [0, -1, 1], atol=1e-3)
    np.testing.assert_allclose(test.features[:, 0], [2], atol=1e-3)


def test_windows_do_not_cross_utterance_boundaries():
    frames = _frames([[1.0], [2.0], [3.0], [4.0]], ["a", "a"], [0, 0, 1, 1])
    np.testing.assert_array_equal(frames.windows(1, 1), [[1, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4]])


def test_word_error_rate_sums_log_probabilities_of_speech_frames():
    recordings = [fsdd.Recording(1, "a", 0), fsdd.Recording(2, "a", 1)]
    labels = np.array([1, 1, 10, 2, 2])
    logits = np.full((5, fsdd.NUM_CLASSES), -5.0)
    logits[0, 1], logits[1, 3] = 4.0, 1.0  # utterance 0: digit 1 wins on the sum
    logits[2, 9] = 50.0  # a silence frame voting strongly for 9: ignored
    logits[3, 2], logits[4, 7] = 1.0, 3.0  # utterance 1: 7 beats 2, a wrong word
    frames = fsdd.FrameSet(np.zeros((5, 1), np.float32), labels, np.array([0, 0, 0, 1, 1]), recordings)
    scores = fsdd.utterance_scores(logits, frames)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(scores[0], log_p[0, :10] + log_p[1, :10])
    assert fsdd.word_error_rate(logits, frames) == 0.5
    assert fsdd.utterance_scores(logits, frames, speech_only=False)[0].argmax() == 9
    assert fsdd.frame_accuracy(logits, labels) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="frame_logits"):
        fsdd.utterance_scores(logits[:4], frames)


# ------------------------------------------------------------------- loading


def test_load_fsdd_from_tiny_folder_labels_frames_and_uses_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for speaker in ("ann", "bob"):
        for digit in (0, 1):
            for take in (0, 5):
                loud = tone(300 + 200 * digit, 0.25)  # 2000 samples
                quiet = np.zeros(800)  # 10 frames-worth of digital silence
                write_wav(folder / f"{digit}_{speaker}_{take}.wav", 32767 * np.concatenate([loud, quiet]))
    cache = tmp_path / "cache"
    data = fsdd.load_fsdd(tmp_path, split="standard", normalization="global", cache_dir=cache)
    assert len(data.train.recordings) == len(data.test.recordings) == 4
    assert all(r.take == 5 for r in data.train.recordings)
    per_utterance = frontend.num_frames(2800, 200, 80)  # 33
    assert len(data.train) == 4 * per_utterance
    first = data.train.labels[data.train.utterance == 0]
    digit = data.train.recordings[0].digit
    # Frames wholly inside the silent tail (start >= 2000) are silence.
    silent_from = math.ceil(2000 / 80)
    np.testing.assert_array_equal(first[:23], digit)
    np.testing.assert_array_equal(first[silent_from:], fsdd.SILENCE)
    np.testing.assert_allclose(data.train.features.mean(axis=0), 0.0, atol=1e-4)
    assert data.mean.shape == (40,) and len(list(cache.glob("*.npz"))) == 1

    def unreadable(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(fsdd, "read_wav", unreadable)
    again = fsdd.load_fsdd(tmp_path, split="speaker", test_speakers=("bob",), cache_dir=cache)
    assert {r.speaker for r in again.test.recordings} == {"bob"}
    assert len(again.test) == 4 * per_utterance
    assert again.validation is None and again.config["validation"] == "none"
    held = fsdd.load_fsdd(
        tmp_path, split="standard", validation="speaker", validation_speakers=("ann",),
        cache_dir=cache,
    )
    assert {(r.speaker, r.take) for r in held.validation.recordings} == {("ann", 5)}
    assert {(r.speaker, r.take) for r in held.train.recordings} == {("bob", 5)}
    assert len(held.validation) == 2 * per_utterance and held.config["validation"] == "speaker"
    with pytest.raises(ValueError, match="no training recordings"):
        fsdd.load_fsdd(tmp_path, split="standard", validation="takes", cache_dir=cache)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        lambda path: path.write_bytes(b""),
        lambda path: np.savez(path, features=np.zeros((3, 40)), energy=np.zeros(3),
                              lengths=np.array([3])),  # other recordings' arrays
    ],
    ids=["truncated", "empty", "wrong-arrays"],
)
def test_a_damaged_feature_cache_is_rebuilt_whole(tmp_path, damage):
    folder = tmp_path / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for digit, take in ((0, 0), (1, 0), (0, 5), (1, 5)):
        samples = 32767 * tone(300 + 200 * digit, 0.3)
        write_wav(folder / f"{digit}_ann_{take}.wav", samples)
    cache = tmp_path / "cache"
    first = fsdd.load_fsdd(tmp_path, split="standard", cache_dir=cache)
    (path,) = cache.glob("*.npz")
    damage(path)
    with pytest.warns(UserWarning, match="feature cache .* is damaged"):
        again = fsdd.load_fsdd(tmp_path, split="standard", cache_dir=cache)
    np.testing.assert_array_equal(again.train.features, first.train.features)
    np.testing.assert_array_equal(again.test.features, first.test.features)
    # The rebuilt file is whole again, and no partial file is left beside it.
    assert [p.name for p in cache.iterdir()] == [path.name]
    with np.load(path) as stored:
        assert len(stored["lengths"]) == 4
        assert stored["lengths"].sum() == len(first.train) + len(first.test)


def test_old_british_names_say_what_they_became():
    with pytest.raises(AttributeError, match="renamed normalize in keras-kd 0.2.0"):
        fsdd.normalise  # noqa: B018
    with pytest.raises(AttributeError, match="renamed NORMALIZATIONS"):
        fsdd.NORMALISATIONS  # noqa: B018
    assert fsdd.NORMALIZATIONS == ("global", "speaker", "none")


def test_load_fsdd_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="KERAS_KD_DATA_DIR"):
        fsdd.load_fsdd(None)
    with pytest.raises(FileNotFoundError, match="No FSDD WAV files"):
        fsdd.load_fsdd(tmp_path)
    write_wav(tmp_path / "0_ann_0.wav", np.zeros(100))
    with pytest.raises(ValueError, match=r"0_ann_0\.wav: 100 samples is shorter"):
        fsdd.load_fsdd(tmp_path)
    with pytest.raises(ValueError, match="`source`"):
        fsdd.load_fsdd(tmp_path, source="http")


@pytest.mark.parametrize(
    "options, shown",
    [({}, True), ({"verbose": 1}, True), ({"verbose": 2}, True), ({"verbose": 0}, False)],
)
def test_load_fsdd_shows_the_feature_progress_unless_verbose_is_0(
    tmp_path, capsys, options, shown
):
    for take in (0, 5):
        write_wav(tmp_path / f"3_ann_{take}.wav", 32767 * tone(400, 0.3))
    capsys.readouterr()
    fsdd.load_fsdd(tmp_path, split="standard", **options)
    printed = capsys.readouterr().out
    assert ("2/2" in printed) == shown, printed


def test_a_bad_verbose_is_refused_before_any_file_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(fsdd, "list_recordings", lambda *args: pytest.fail("read a folder"))
    with pytest.raises(ValueError, match=r"`verbose` must be 0 \(silent\), 1 .* 'auto'"):
        fsdd.load_fsdd(tmp_path, verbose="auto")
    layer = frontend.LogMelSpectrogram()
    with pytest.raises(ValueError, match="`verbose` must be"):
        fsdd.extract_features([], lambda r: None, layer, verbose=3)


def test_tfds_source_offline_gives_a_clear_error(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(FileNotFoundError, match=r"spoken_digit.*ConnectionError.*source='files'"):
        fsdd.load_fsdd(source="tfds")


def test_real_fsdd_layout_and_frame_count(data_dir):
    recordings = fsdd.list_recordings(data_dir)
    assert len(recordings) == 3000
    assert len({r.speaker for r in recordings}) == 6
    train, test = fsdd.split_recordings(recordings, "standard")
    assert (len(train), len(test)) == (2700, 300)
    waveform = fsdd.read_wav(recordings[0].path)
    features = frontend.LogMelSpectrogram()(waveform[None]).numpy()[0]
    assert features.shape == (frontend.num_frames(len(waveform), 200, 80), 40)
    assert np.isfinite(features).all()
