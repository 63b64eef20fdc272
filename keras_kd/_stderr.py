"""Capturing the process's standard error at file-descriptor level.

TensorFlow's C++ code (start-up lines, the TFLite converter's log) writes to
file descriptor 2 directly, past `sys.stderr`, so `contextlib.redirect_stderr`
cannot catch it; `captured_fd2` points descriptor 2 at a temporary file instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def captured_fd2() -> Iterator[list[str]]:
    """Sends everything written to file descriptor 2 in the block to a buffer.

    Python's `sys.stderr` is flushed on the way in and out, so what the block
    prints there is captured too when it writes to descriptor 2. Descriptor 2
    is restored when the block ends, also when it raises.

    Yields:
        A list that receives the captured text, one string, when the block
        ends, also when it raises (undecodable bytes replaced).

    Example:

    >>> with captured_fd2() as captured:
    ...     _ = os.write(2, b"I0000 cpu_feature_guard.cc] AVX2\\n")
    >>> captured
    ['I0000 cpu_feature_guard.cc] AVX2\\n']
    """
    captured: list[str] = []
    sys.stderr.flush()
    with tempfile.TemporaryFile() as buffer:
        saved = os.dup(2)
        os.dup2(buffer.fileno(), 2)
        try:
            yield captured
        finally:
            with contextlib.suppress(ValueError, OSError):  # a closed sys.stderr
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            captured.append(buffer.read().decode("utf-8", "replace"))
