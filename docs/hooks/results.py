"""MkDocs hook: the Results pages, generated from `benchmarks/` at every build.

- `<!-- keras-kd: results -->` becomes `benchmarks/RESULTS.md` without its title,
  so the Results page shows the recorded figures, dates and commands as they are.
- Every `benchmarks/results/*.md` becomes a page `results/<name>.md` (listed
  under Results > Detailed tables, and by `<!-- keras-kd: result-tables -->`),
  and every `benchmarks/results/*.png` is copied beside them
  (`<!-- keras-kd: plots -->` shows them all).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_FILE = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"
SITE_FOLDER = "results"
MARKER = re.compile(r"<!--\s*keras-kd:\s*(?P<name>results|plots|result-tables)\s*-->")


def four_space_lists(lines: list[str]) -> list[str]:
    """List items' indented content moved 2 spaces right.

    The records indent what belongs to a list item (text, a command, a table) by
    2 spaces, as GitHub reads it; Python-Markdown needs 4, or the item ends and a
    command inside it becomes prose.
    """
    out, in_list = [], False
    for line in lines:
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if indent == 0 and stripped:
            in_list = stripped.startswith(("- ", "* ")) or bool(re.match(r"\d+\. ", stripped))
        elif in_list and indent >= 2 and stripped:
            line = "  " + line
        out.append(line)
    return out


def results_markdown() -> str:
    """`benchmarks/RESULTS.md` from the line after its `# ` title."""
    lines = RESULTS_FILE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# "):
            lines = lines[index + 1 :]
            break
    return "\n".join(four_space_lists(lines)).strip() + "\n"


def result_tables() -> list[Path]:
    """The detailed tables in `benchmarks/results/`, by name."""
    return sorted(RESULTS_DIR.glob("*.md"))


def result_plots() -> list[Path]:
    """The plots in `benchmarks/results/`, by name."""
    return sorted(RESULTS_DIR.glob("*.png"))


def table_page(path: Path) -> str:
    """A detailed table as a page that names its source file."""
    lines = four_space_lists(path.read_text(encoding="utf-8").splitlines())
    note = f"*Generated from `benchmarks/results/{path.name}` when the site is built.*"
    if lines and lines[0].startswith("# "):
        return "\n".join([lines[0], "", note, *lines[1:]]) + "\n"
    return "\n".join([f"# {path.stem}", "", note, "", *lines]) + "\n"


def plots_markdown(prefix: str) -> str:
    """Every plot, each captioned with its file."""
    plots = result_plots()
    if not plots:
        return "*No plots in `benchmarks/results/` yet.*\n"
    return "\n".join(
        f"![{plot.stem}]({prefix}{plot.name})\n\n*`benchmarks/results/{plot.name}`*\n"
        for plot in plots
    )


def on_config(config, **kwargs):
    """Puts the detailed tables under Results in the navigation."""
    pages = [{path.stem: f"{SITE_FOLDER}/{path.stem}.md"} for path in result_tables()]
    for index, item in enumerate(config["nav"]):
        if isinstance(item, dict) and item.get("Results") == "results.md":
            config["nav"][index] = {
                "Results": [{"Overview": "results.md"}, {"Detailed tables": pages}]
            }
    return config


def on_files(files, config, **kwargs):
    """Adds the generated table pages and the plots to the site."""
    from mkdocs.structure.files import File

    for path in result_tables():
        uri = f"{SITE_FOLDER}/{path.stem}.md"
        files.append(File.generated(config, uri, content=table_page(path)))
    for path in result_plots():
        uri = f"{SITE_FOLDER}/{path.name}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    """Expands this hook's markers."""
    prefix = "../" * page.file.src_uri.count("/") + f"{SITE_FOLDER}/"
    generators = {
        "results": results_markdown,
        "plots": lambda: plots_markdown(prefix),
        "result-tables": lambda: "".join(
            f"- [{path.stem}]({prefix}{path.stem}.md)\n" for path in result_tables()
        ),
    }
    return MARKER.sub(lambda match: generators[match.group("name")](), markdown)
