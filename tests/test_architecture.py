"""The layer contracts in pyproject.toml hold: a new upward import fails `make test`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports is missing: `make install` installs import-linter"
    return exe


def test_import_contracts_are_kept() -> None:
    out = subprocess.run([_lint_imports()], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_an_upward_import_breaks_a_contract(tmp_path: Path) -> None:
    # The contracts must be able to fail: the same check on a copy with core -> adapters.
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "services", copy / "services", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "training", copy / "training", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    stable = copy / "services/keyart/core/stable.py"
    stable.write_text(stable.read_text() + "\nfrom keyart.adapters.grpc import convert  # noqa\n")
    env = {"PYTHONPATH": f"{copy / 'services'}:{copy / 'training'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([_lint_imports()], cwd=copy, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode != 0
    assert "keyart.core is not allowed to import keyart.adapters" in out.stdout
