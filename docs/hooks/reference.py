"""MkDocs hook: the generated parts of the API reference, and its checks.

- `<!-- keras-kd: cli -->` becomes the options of every `keras-kd` subcommand,
  read from the argparse parsers (`keras_kd.cli.build_parser` and each
  experiment's `build_parser`), so the page is the `--help` of the installed code.
- `<!-- keras-kd: api-index -->` becomes a table of every name in
  `keras_kd.__all__`, each a cross-reference to its entry: a name without an
  entry is an unresolved reference, which fails `mkdocs build --strict`.
- Before the build, every public function, class and method that a
  `::: keras_kd...` directive renders must have a docstring
  (`missing_docstrings`), or the build fails naming them.
- After every page, a `<!-- keras-kd: ... -->` marker that no hook expanded
  fails the build (list this hook last).
"""

from __future__ import annotations

import argparse
import html
import importlib
import os
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
MARKER = re.compile(r"<!--\s*keras-kd:\s*(?P<name>[\w-]+)\s*-->")
# `::: keras_kd.x` and the indented YAML options under it.
DIRECTIVE = re.compile(
    r"^:::\s+(?P<path>keras_kd[\w.]*)[ \t]*\n(?P<options>(?:[ \t]+\S.*\n?)*)",
    re.MULTILINE,
)
# Methods of Keras' own API (Model, Layer, Loss, Callback): an override needs no
# docstring of its own, Keras documents it.
KERAS_PROTOCOL = re.compile(
    r"^(call|build|get_config|from_config|compute_output_shape|get_compile_config|"
    r"compile_from_config|train_step|test_step|predict_step|get_metrics_result|"
    r"fit|evaluate|predict|train_on_batch|test_on_batch|predict_on_batch|on_\w+)$"
)


class DocsCheckError(Exception):
    """A check of the documentation failed (outside MkDocs, e.g. in a test)."""


def _error(message: str) -> Exception:
    try:
        from mkdocs.exceptions import PluginError
    except ImportError:
        return DocsCheckError(message)
    return PluginError(message)


def _import_keras_kd():
    """`keras_kd`, with TensorFlow started as quietly as the `keras-kd` command does."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from keras_kd.commands import start_tensorflow
    except ImportError:
        pass
    else:
        start_tensorflow(False)
    return importlib.import_module("keras_kd")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of `keras-kd` and of each subcommand, in `--help` order."""
    _import_keras_kd()
    cli = importlib.import_module("keras_kd.cli")
    parser = cli.build_parser()
    parsers = {"keras-kd": parser}
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, subparser in action.choices.items():
            if name in cli.EXPERIMENTS:
                module = name.replace("-", "_")  # keras-kd language-model
                experiment = importlib.import_module(f"keras_kd.experiments.{module}")
                subparser = experiment.build_parser()
            parsers[name] = subparser
    return parsers


CODE_SPAN = re.compile(r"`([^`]+)`")


def _cell(text: object) -> str:
    """`text` for a Markdown table cell: code spans as HTML, so a `|` in them stays."""
    parts = CODE_SPAN.split(str(text).replace("\n", " "))
    cell = []
    for index, part in enumerate(parts):
        escaped = html.escape(part, quote=False).replace("|", "&#124;")
        cell.append(f"<code>{escaped}</code>" if index % 2 else escaped)
    return "".join(cell)


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return " &#124; ".join(_cell(f"`{choice}`") for choice in action.choices)
    metavar = action.metavar or action.dest.upper()
    return _cell(" ".join(metavar) if isinstance(metavar, tuple) else metavar)


def option_rows(parser: argparse.ArgumentParser, actions) -> Iterator[str]:
    """One Markdown table row per option among `actions` of `parser`."""
    formatter = parser._get_formatter()
    for action in actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(action.option_strings) or action.dest
        meaning = _cell(formatter._expand_help(action)) if action.help else ""
        if action.required:
            meaning = "**required**; " + meaning
        yield f"| `{names}` | {_value(action)} | {meaning} |"


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name in action.choices:
                yield f"| [`{name}`](#{name}) | {_cell(helps.get(name) or '')} |"


def cli_markdown() -> str:
    """A section per subcommand: its description and its options, by group."""
    parts = []
    for name, parser in command_parsers().items():
        title = "keras-kd" if name == "keras-kd" else f"keras-kd {name}"
        parts.append(f"## `{title}` {{#{name}}}\n")
        if parser.description:
            parts.append(_cell(" ".join(parser.description.split())) + "\n")
        if name == "keras-kd":
            parts.append("| subcommand | what it does |\n| --- | --- |")
            parts.extend(_subcommands(parser))
            parts.append("")
        for group in parser._action_groups:
            rows = list(option_rows(parser, group._group_actions))
            if not rows:
                continue
            if group.title not in ("options", "optional arguments", "positional arguments"):
                parts.append(f"**{_cell(group.title)}**" + (
                    f": {_cell(group.description)}" if group.description else ""
                ) + "\n")
            parts.append("| option | value | meaning |\n| --- | --- | --- |")
            parts.extend(rows)
            parts.append("")
    return "\n".join(parts)


def reference_path(name: str) -> str:
    """Where the reference documents `keras_kd.<name>`: its public module's path."""
    keras_kd = _import_keras_kd()
    if name in getattr(keras_kd, "_MODULES", ()):
        return f"keras_kd.{name}"
    home = getattr(keras_kd, "_HOME", {}).get(name)
    return f"{home}.{name}" if home else f"{getattr(keras_kd, name).__module__}.{name}"


def api_index_markdown() -> str:
    """A table of `keras_kd.__all__`, each name linked to its reference entry."""
    keras_kd = _import_keras_kd()
    rows = ["| name | kind | what it is |", "| --- | --- | --- |"]
    for name in keras_kd.__all__:
        obj = getattr(keras_kd, name)
        doc = (obj.__doc__ or "").strip()
        if not doc:
            raise _error(f"keras_kd.{name} has no docstring; add one in the source.")
        if isinstance(obj, type(keras_kd)):
            kind = "module"
        else:
            kind = "class" if isinstance(obj, type) else "function"
        summary = _cell(doc.splitlines()[0])
        rows.append(f"| [`{name}`][{reference_path(name)}] | {kind} | {summary} |")
    return "\n".join(rows) + "\n"


def documented_paths(reference: Path = REFERENCE) -> dict[str, list[str] | None]:
    """The objects that the reference pages render (`::: keras_kd...` lines).

    Returns:
        Path of each object to the members its directive selects
        (`options: members: [...]`), or `None` for all public members.
    """
    import yaml

    paths: dict[str, list[str] | None] = {}
    for page in sorted(reference.glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            options = yaml.safe_load(textwrap.dedent(match.group("options"))) or {}
            members = (options.get("options") or {}).get("members")
            paths[match.group("path")] = members if isinstance(members, list) else None
    return paths


def missing_docstrings(
    paths: Mapping[str, list[str] | None] | None = None,
    *,
    package: str = "keras_kd",
    search_path: Path = ROOT,
) -> list[str]:
    """Public functions, classes and methods rendered without a docstring.

    Reads the source statically with griffe, as mkdocstrings does: for each
    documented module, its public functions and classes (its `__all__`, or
    the names it defines without a leading underscore), and for each class,
    the public methods it defines. Overrides of Keras methods (`call`,
    `get_config`, callback hooks, ...) are exempt: Keras documents them.

    Args:
        paths: Object paths to the members their directive selects (`None`:
            all public ones); default `documented_paths()`.
        package: The package the paths start with.
        search_path: The folder that holds `package`.

    Returns:
        The paths of the objects without a docstring, in the order visited.
    """
    import griffe

    root = griffe.load(package, search_paths=[str(search_path)], resolve_aliases=True)
    missing: list[str] = []
    seen: set[str] = set()

    def visit(obj, path: str, only: list[str] | None = None) -> None:
        target = obj.final_target if obj.is_alias else obj
        if target.path in seen:
            return
        seen.add(target.path)
        if not target.docstring:
            missing.append(path)
        for name, member in target.members.items():
            if name.startswith("_") or (only is not None and name not in only):
                continue
            if target.kind.value == "module":
                wanted = member.kind.value in ("function", "class") and member.is_public
                if wanted and (member.is_alias or member.parent is target):
                    visit(member, f"{path}.{name}")
            elif target.kind.value == "class" and member.kind.value == "function":
                if KERAS_PROTOCOL.match(name):
                    continue
                if not member.docstring:
                    missing.append(f"{path}.{name}")

    for path, only in (documented_paths() if paths is None else paths).items():
        obj = root if path == package else root[path.removeprefix(f"{package}.")]
        visit(obj, path, only)
    return missing


def on_pre_build(config, **kwargs):
    """Fails the build when the reference would show a name without a docstring."""
    missing = missing_docstrings()
    if missing:
        raise _error(
            "public names without a docstring (write one in the source): "
            + ", ".join(missing)
        )


def on_page_markdown(markdown, page, config, files, **kwargs):
    """Expands this hook's markers; any other marker left is an error."""
    generators = {"cli": cli_markdown, "api-index": api_index_markdown}

    def expand(match: re.Match) -> str:
        name = match.group("name")
        if name not in generators:
            raise _error(
                f"{page.file.src_uri}: no hook expands <!-- keras-kd: {name} -->"
            )
        return generators[name]()

    return MARKER.sub(expand, markdown)
