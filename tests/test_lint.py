"""ruff, mypy and the import contracts run as part of the test suite, so CI keeps the code clean.

The import contracts (``[importlinter]`` in ``setup.cfg``) keep the layers apart: the
core (``bridge`` without the composition and the operator tools) imports no actor, no
adapter, no actor framework and no platform SDK; the actors import no adapter; the
adapters import no actor.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def test_ruff_clean() -> None:
    if shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists():
        pytest.fail("ruff is not installed; install the dev extra: pip install -e '.[dev]'")
    result = _run(sys.executable, "-m", "ruff", "check", "bridge", "actors", "adapters",
                  "tests", "bin/bridge")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


#: The contracts' names in setup.cfg, as lint-imports reports them.
CONTRACTS = ("The core imports no actor, no adapter, no actor framework and no platform SDK",
             "The actors import no adapter",
             "The adapters import no actor and no actor framework")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages and the setup.cfg in ``root`` (the first on sys.path)."""
    tool = Path(sys.executable).parent / "lint-imports"
    if not tool.exists():
        pytest.fail("import-linter is not installed; install the dev extra: "
                    "pip install -e '.[dev]'")
    return subprocess.run([str(tool), "--no-cache", "--no-logo"], cwd=root,
                          capture_output=True, text=True, timeout=600, check=False)


def test_import_contracts_kept() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:
        assert f"{name} KEPT" in result.stdout, result.stdout


def test_import_contracts_catch_a_new_violation(tmp_path: Path) -> None:
    """One new forbidden import per layer, in a copy of the tree: each contract breaks."""
    for package in ("bridge", "actors", "adapters"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    probes = {"bridge": "import actors.timers\n",
              "actors": "import adapters.agents.echo\n",
              "adapters": "import pykka\n"}
    for package, line in probes.items():
        (tmp_path / package / "layer_probe.py").write_text(line, encoding="utf-8")
    result = _lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for name in CONTRACTS:
        assert f"{name} BROKEN" in output, output
    for importer, imported in (("bridge.layer_probe", "actors.timers"),
                               ("actors.layer_probe", "adapters.agents.echo"),
                               ("adapters.layer_probe", "pykka")):
        assert f"{importer} -> {imported}" in output, output
