"""The package's layers (.importlinter) hold, and import-linter really catches an import that breaks them."""
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the test extra installs import-linter beside pytest
UPWARD = "from eiclip_core.train import loop\n"  # the model layer importing training
FIND_PACKAGE = "import importlib.util; print(importlib.util.find_spec('eiclip_core').origin)"


def all_but_sources(folder, names) -> list:
    """shutil.copytree's ignore: everything but folders and .py files (no weights, configs or caches)."""
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or Path(folder, n).is_dir())]


def run_in(root: Path, *argv) -> subprocess.CompletedProcess:
    """`argv` run in `root` with `root` first on PYTHONPATH, so `import eiclip_core` finds the copy under
    `root`, not the installed package (the lint-imports CLI also puts its working folder first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(a) for a in argv], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def lint_imports(root: Path, *args) -> subprocess.CompletedProcess:
    """lint-imports on the eiclip_core under `root`, against that root's .importlinter."""
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} missing: install the test extra (pip install -e '.[test]')"
    return run_in(root, LINT_IMPORTS, "--no-cache", "--no-logo", *args)


def test_the_package_keeps_its_layers():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_upward_import_breaks_the_layer_contracts(tmp_path):
    """A copy of the package (its .py files only) in which model/loss.py imports training: lint-imports
    fails and names both contracts that forbid it and the import with its line."""
    shutil.copytree(ROOT / "eiclip_core", tmp_path / "eiclip_core", ignore=all_but_sources)
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    loss = tmp_path / "eiclip_core" / "model" / "loss.py"
    loss.write_text(UPWARD + loss.read_text())
    assert not list((tmp_path / "eiclip_core").rglob("*.pt"))  # no weights copied
    found = run_in(tmp_path, sys.executable, "-c", FIND_PACKAGE)
    assert Path(found.stdout.strip()) == tmp_path / "eiclip_core" / "__init__.py", found.stdout + found.stderr

    contracts = configparser.ConfigParser()
    contracts.read(tmp_path / ".importlinter")
    for key in ("stages", "library"):
        name = contracts[f"importlinter:contract:{key}"]["name"]
        done = lint_imports(tmp_path, "--contract", key)
        report = done.stdout + done.stderr
        assert done.returncode != 0, report
        assert f"{name} BROKEN" in report, report
        assert "eiclip_core.model.loss -> eiclip_core.train.loop (l.1)" in report, report
