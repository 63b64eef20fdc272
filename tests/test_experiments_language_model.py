"""`keras-kd language-model`: corpus split, tokenizer, quick mode, bad input."""

import json

import pytest

from keras_kd.datasets import python_source
from keras_kd.datasets.python_source import (
    BytePairTokenizer,
    list_source_files,
    load_python_source,
    read_corpus,
    split_of,
    windows,
)
from keras_kd.experiments import language_model


def test_split_is_deterministic_disjoint_and_independent_of_the_cap():
    small, _, digest = read_corpus(300_000)
    again, _, same_digest = read_corpus(300_000)
    assert small == again and digest == same_digest
    sets = {split: set(paths) for split, paths in small.items()}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    # Another cap takes other files, but a file's split depends on its path only.
    large, _, other_digest = read_corpus(1_000_000)
    assert other_digest != digest
    in_large = {path: split for split, paths in large.items() for path in paths}
    shared = [path for paths in small.values() for path in paths if path in in_large]
    assert len(shared) > 20
    for split, paths in small.items():
        assert all(split_of(path) == split for path in paths)
        assert all(in_large[path] == split for path in paths if path in in_large)
    train_share = len(large["train"]) / sum(map(len, large.values()))
    assert 0.7 < train_share < 0.9  # the documented 80 / 10 / 10 split of files


def test_the_cap_holds_and_files_come_in_digest_order():
    chosen = list_source_files(max_bytes=300_000)
    root = python_source.stdlib_root()
    assert sum((root / path).stat().st_size for path in chosen) <= 300_000
    assert chosen == list_source_files(max_bytes=300_000)
    assert not any("site-packages" in path for path in chosen)


def test_tokenizer_is_lossless_deterministic_and_round_trips_through_json():
    _, texts, _ = read_corpus(300_000)
    first = BytePairTokenizer.train(texts["train"], 400)
    second = BytePairTokenizer.train(texts["train"], 400)
    assert first.merges == second.merges and first.vocab_size == 400
    reloaded = BytePairTokenizer.from_json(json.loads(json.dumps(first.to_json())))
    for text in texts["test"]:  # text never seen in training
        ids = reloaded.encode(text)
        assert reloaded.decode(ids) == text
        assert min(ids) >= python_source.FIRST_BYTE_ID
    weird = "é\t\r\n  x = 'ü' # \x00\n".encode() + b"\xff\xfe"
    assert first.decode(first.encode(weird)) == weird
    assert len(first.encode(b"def __init__(self):\n")) < len(b"def __init__(self):\n")


def test_windows_predict_the_next_token_and_pad_with_zero():
    x, y = windows([[1, 10, 11, 12, 13], [1, 20]], 3)
    assert x.tolist() == [[1, 10, 11], [12, 0, 0], [1, 0, 0]]
    assert y.tolist() == [[10, 11, 12], [13, 0, 0], [20, 0, 0]]


def test_corpus_windows_mask_exactly_the_positions_without_a_target():
    source = load_python_source(300_000, vocab_size=300, sequence_length=32)
    for split in python_source.SPLITS:
        x, y = source.splits[split]
        assert ((x != 0) == (y != 0)).all()
        assert source.tokens(split) == int((y != 0).sum()) > 0
    settings = source.settings()
    assert settings["python_version"] == source.python_version
    assert settings["corpus_digest"] == source.files_digest


@pytest.mark.slow
def test_quick_mode_writes_the_table_with_the_expected_rows(tmp_path, capsys):
    out = tmp_path / "run"
    # --quick, on a smaller slice and one seed to keep the test short.
    quick = ["--quick", "--out", str(out), "--seeds", "0", "--max-bytes", "120000",
             "--sequence-length", "32"]  # fmt: skip
    status = language_model.main(quick)
    assert status == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["model"] for row in rows] == [
        "teacher",
        "student from scratch",
        "student distilled (T=2, soft weight 0.5)",
        "student distilled from the top-64 cache (dropped logits' mean, same T and weight)",
    ]
    cache = json.loads((out / "models" / "teacher-cache-top64" / "record.json").read_text())
    assert cache["build_seconds"] > 0 and cache["cache_mb"] > 0
    assert "top-64 cache was built once" in (out / "results.md").read_text()
    for row in rows:
        assert 1.0 < float(row["test perplexity"].split()[0]) < 512
        assert float(row["train tokens/s"].split()[0]) > 0
    assert "| teacher | 2 x 64 |" in (out / "results.md").read_text()
    assert (out / "models" / "tokenizer" / "record.json").exists()
    # A rerun reuses every model; another corpus cap is refused, naming it.
    assert language_model.main(quick) == 0
    printed = capsys.readouterr().out
    assert "[cached-s0] finished earlier" in printed
    assert "[teacher-cache-top64] measured earlier" in printed
    # The mass fill is another cache and other students, beside them in the folder.
    assert language_model.main([*quick, "--parts", "cached", "--top-k-fill", "mass"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[-1]["model"] == "student distilled from the top-64 cache (dropped mass kept, same T and weight)"
    assert (out / "models" / "cached-mass-s0" / "record.json").exists()
    capsys.readouterr()
    status = language_model.main([*quick, "--max-bytes", "250000"])
    assert status == 2
    assert "corpus_digest" in capsys.readouterr().err


def test_a_cap_too_small_for_a_validation_split_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="leaves no validation"):
        read_corpus(300)
    status = language_model.main(
        ["--quick", "--out", str(tmp_path / "run"), "--max-bytes", "300"]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "max_bytes=300 leaves no validation" in err and "Raise the cap" in err
    assert err.count("\n") == 1


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert language_model.main(["--quick", "--out", out, "--vocab-size", "100"]) == 2
    assert "--vocab-size must be > 258" in capsys.readouterr().err
    assert language_model.main(["--quick", "--out", out, "--student-width", "30",
                                "--student-heads", "4"]) == 2  # fmt: skip
    assert "not a multiple" in capsys.readouterr().err
    assert language_model.main(["--quick", "--out", out, "--top-k", "600"]) == 2
    assert "--top-k 600 exceeds --vocab-size 512" in capsys.readouterr().err
    assert language_model.main(["--parts", "nothing", "--out", out]) == 2
