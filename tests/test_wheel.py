"""The built wheel is the whole CLI: `pip install` users get every subcommand.

The wheel is built from the working tree (offline: no build isolation, no index)
and installed into a scratch virtual environment. That environment reuses the
dependencies already installed for the tests through a `.pth` file naming their
`site-packages` (Python adds the folder to `sys.path` but does not read the
`.pth` files inside it, so the editable install of the checkout stays out of
the way). Every command then runs from a folder outside the checkout, and the
first test proves that `keras_kd` is imported from the installed wheel.
"""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import command_env

import keras_kd
from keras_kd.cli import EXPERIMENTS

WITHOUT_DATA = {"language-model"}

pytestmark = [pytest.mark.wheel, pytest.mark.slow]

CHECKOUT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """`(bin folder, experiment modules in the wheel, folder to run from)`."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    shutil.copytree(
        CHECKOUT / "keras_kd",
        source / "keras_kd",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", root / "dist", source],
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("keras_kd-*.whl")
    assert wheel.name.startswith(f"keras_kd-{keras_kd.__version__}-")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=300)
    assert made.returncode == 0, made.stderr
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "_keras_kd_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    install = _run(
        [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
         "--no-deps", "--no-index", "--quiet", wheel],
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    with zipfile.ZipFile(wheel) as archive:
        modules = {  # as subcommand names: language_model.py -> language-model
            Path(name).stem.replace("_", "-")
            for name in archive.namelist()
            if name.startswith("keras_kd/experiments/") and name.endswith(".py")
        }
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin", modules, elsewhere


def test_keras_kd_is_imported_from_the_wheel(installed):
    bin_dir, _, elsewhere = installed
    result = _run(
        [bin_dir / "python", "-c", "import keras_kd; print(keras_kd.__file__); "
         "print(keras_kd.__version__)"],
        cwd=elsewhere, env=command_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    path, version = result.stdout.split()
    assert Path(path).is_relative_to(bin_dir.parent)
    assert version == keras_kd.__version__


def test_every_help_works_from_the_wheel(installed):
    bin_dir, modules, elsewhere = installed
    missing = sorted(set(EXPERIMENTS) - modules)
    for command in ("", "demo", "distill", "tune", "export", *EXPERIMENTS):
        if command in missing:
            continue
        result = _run(
            [bin_dir / "keras-kd", *([command] if command else []), "--help"],
            cwd=elsewhere, env=command_env(), timeout=300,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr == "", (command, result.stderr)
        assert f"keras-kd {command}".strip() in result.stdout, (command, result.stdout)
    if missing:
        pytest.skip(f"all other helps work; keras_kd.experiments lacks {missing}")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_quick_mode_from_the_wheel(name, installed, data_dir, tmp_path):
    bin_dir, modules, elsewhere = installed
    if name not in modules:
        pytest.skip(f"keras_kd.experiments.{name} is not written yet")
    out = tmp_path / "out"
    # The language model reads the Python standard library, not the data folder.
    data = [] if name in WITHOUT_DATA else ["--data-dir", data_dir]
    result = _run(
        [bin_dir / "keras-kd", name, "--quick", *data, "--out", out],
        cwd=elsewhere, env=command_env(), timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.md").is_file()
