"""Tests of keras_kd._stderr: capturing file descriptor 2, and restoring it."""

import os
import sys

import pytest

from keras_kd import commands
from keras_kd._stderr import captured_fd2


def _fd2_identity():
    status = os.fstat(2)
    return status.st_dev, status.st_ino


def test_a_write_to_fd2_is_captured_and_not_shown(capfd):
    before = _fd2_identity()
    with captured_fd2() as captured:
        assert _fd2_identity() != before
        os.write(2, b"native line\n")
        assert captured == []  # filled when the block ends
    assert _fd2_identity() == before
    assert captured == ["native line\n"]
    assert "native line" not in capfd.readouterr().err


def test_buffered_python_stderr_is_flushed_into_the_capture(monkeypatch, capfd):
    with open(2, "w", closefd=False) as buffered:  # block-buffered, on descriptor 2
        monkeypatch.setattr(sys, "stderr", buffered)
        print("before", file=sys.stderr)
        with captured_fd2() as captured:
            print("inside", file=sys.stderr)
        print("after", file=sys.stderr)
        buffered.flush()
    assert captured == ["inside\n"]
    err = capfd.readouterr().err
    assert "before" in err and "after" in err and "inside" not in err


def test_fd2_is_restored_and_the_text_kept_when_the_block_raises(capfd):
    before = _fd2_identity()
    with pytest.raises(RuntimeError, match="converter failed"):
        with captured_fd2() as captured:
            os.write(2, b"why it failed\n")
            raise RuntimeError("converter failed")
    assert _fd2_identity() == before
    assert captured == ["why it failed\n"]
    os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert "after the block" in err and "why it failed" not in err


def test_undecodable_bytes_are_replaced():
    with captured_fd2() as captured:
        os.write(2, b"caf\xe9\n")
    assert captured == ["caf\ufffd\n"]


def test_filtered_start_up_lines_are_replayed_when_the_body_raises(capfd):
    with pytest.raises(ImportError, match="no tensorflow"):
        with commands._native_stderr_filtered(commands._SEVERITY["W"]):
            os.write(2, b"I0000 00:00:1795.5  9 port.cc:153] oneDNN operations are on\n")
            os.write(2, b"E0000 00:00:1795.6  9 cuda_platform.cc:52] failed cuInit\n")
            raise ImportError("no tensorflow")
    err = capfd.readouterr().err
    assert "oneDNN" not in err  # an info line, below the threshold
    assert "failed cuInit" in err  # an error line, replayed
