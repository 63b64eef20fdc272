"""The documentation site: its runnable code runs, and its reference is complete.

- Every code block of `docs/` fenced as ```` ```{.python .runnable} ```` runs, page
  by page, in order, in one namespace per page, in a fresh working folder; a
  ```` ```text ```` block right after one is what it must print.
- Every name in `keras_kd.__all__` is rendered by a `::: ...` directive of a
  reference page, and nothing the reference renders lacks a docstring.
- `mkdocs build --strict` passes (slow; needs the `docs` extra).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

import keras_kd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# A runnable block, and the ```text block right after it, if any: what it prints.
RUNNABLE = re.compile(
    r"^(?P<indent>[ \t]*)```\{\.python \.runnable\}[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*\n"
    r"(?:[ \t]*\n)*(?:(?P=indent)```text[ \t]*\n(?P<output>.*?)^(?P=indent)```)?",
    re.MULTILINE | re.DOTALL,
)


def runnable_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """`(first line, code, printed output or None)` of each runnable block of `page`."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in RUNNABLE.finditer(text):
        line = text.count("\n", 0, match.start("body")) + 1
        output = match.group("output")
        if output is not None:
            output = textwrap.dedent(output)
        blocks.append((line, textwrap.dedent(match.group("body")), output))
    return blocks


PAGES = sorted(page for page in DOCS.rglob("*.md") if runnable_blocks(page))


def _load_hook(name: str):
    """A module of `docs/hooks/`, which MkDocs loads by path too."""
    path = DOCS / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"keras_kd_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_some_pages_have_runnable_blocks():
    names = {page.relative_to(DOCS).as_posix() for page in PAGES}
    assert "getting-started.md" in names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(DOCS).as_posix())
def test_runnable_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keras.backend.clear_session()
    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, code, output in runnable_blocks(page):
        source = f"{page.relative_to(ROOT)}, block at line {line}"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, source, "exec"), namespace)  # noqa: S102
        if output is not None:
            assert printed.getvalue().strip() == output.strip(), (
                f"{source} printed\n{printed.getvalue()}\nbut the page shows\n{output}"
            )


def test_block_finder_reads_indented_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```{.python .runnable}\nx = 1\n```\n\n"
        "!!! note\n    ```{.python .runnable}\n    print(x + 1)\n    ```\n\n"
        "    ```text\n    2\n    ```\n\n"
        "```python\nnot_run()\n```\n"
    )
    assert runnable_blocks(page) == [(4, "x = 1\n", None), (9, "print(x + 1)\n", "2\n")]


def _renders(directive: str, members: list[str] | None, name: str) -> bool:
    """Whether the directive `::: directive` renders `keras_kd.<name>`."""
    if directive == f"keras_kd.{name}":
        return True
    if members is not None and name not in members:
        return False
    try:
        module = importlib.import_module(directive)
    except ImportError:
        return False
    exported = getattr(module, "__all__", None)
    if exported is not None and name not in exported:
        return False
    return getattr(module, name, None) is getattr(keras_kd, name)


def test_every_public_name_has_a_reference_entry():
    directives = _load_hook("reference").documented_paths()
    missing = [
        name
        for name in keras_kd.__all__
        if not any(_renders(path, members, name) for path, members in directives.items())
    ]
    assert not missing, f"names of keras_kd.__all__ without a reference entry: {missing}"


def test_reference_shows_no_name_without_docstring():
    pytest.importorskip("griffe")
    missing = _load_hook("reference").missing_docstrings()
    assert not missing, f"public names without a docstring: {missing}"


def test_docstring_check_names_each_undocumented_public_object(tmp_path):
    pytest.importorskip("griffe")
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\n')
    (package / "mod.py").write_text(textwrap.dedent('''
        """A module."""

        def documented():
            """Has one."""

        def undocumented():
            pass

        def _private():
            pass

        class Layer:
            """A class."""

            def call(self, x):
                return x

            def public(self):
                pass

            def _helper(self):
                pass
        '''))
    found = _load_hook("reference").missing_docstrings(
        {"fakepkg.mod": None}, package="fakepkg", search_path=tmp_path
    )
    assert found == ["fakepkg.mod.undocumented", "fakepkg.mod.Layer.public"]


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    if shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must build the site: install the docs extra (make test does)")
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def test_results_keep_a_list_items_command_and_table_inside_it():
    lines = [
        "- **Speed.** Measured with:",
        "",
        "      python bench.py --rounds 6",
        "",
        "  | a | b |",
        "  | --- | --- |",
        "",
        "Next paragraph.",
        "    code at top level",
    ]
    assert _load_hook("results").four_space_lists(lines) == [
        "- **Speed.** Measured with:",
        "",
        "        python bench.py --rounds 6",
        "",
        "    | a | b |",
        "    | --- | --- |",
        "",
        "Next paragraph.",
        "    code at top level",
    ]
