"""ruff, mypy and the import contracts run as part of the test suite, so CI keeps the code clean.

The import contracts (``[importlinter]`` in ``setup.cfg``) keep the layers apart: the
core (``bridge`` without the composition and the operator tools) imports no actor, no
adapter, no actor framework and no platform SDK; the actors import no adapter; the
adapters import no actor.
"""

from __future__ import annotations

import re
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


#: Platform names the platform-neutral layers must not carry (issue 12).
PLATFORM_NAMES = re.compile(r"fabric|guild|wakeup|x_type", re.IGNORECASE)
#: Where platforms may be named: the composition, the CLI and the operator tools.
COMPOSITION = ("bridge/ops/", "bridge/cli/")
#: Core files that still name a platform, and why (keep it minimal: the test fails
#: when one of them no longer needs its place here).
NAMING_PLATFORMS = {
    "bridge/board.py": "reads a status.json of an older version (its 'guild' field)",
    "bridge/store.py": "its migrations name the old schema's columns and fields",
}


def _platform_names(path: Path) -> list[str]:
    """The lines of ``path`` that name a platform, as ``path:line: text``."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for number, line in enumerate(lines, 1) if PLATFORM_NAMES.search(line)]


def test_no_platform_names_in_the_runtime_and_the_core() -> None:
    files = sorted(p for folder in ("actors", "bridge") for p in (ROOT / folder).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    found: dict[str, list[str]] = {}
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(COMPOSITION):
            continue
        lines = _platform_names(path)
        if lines:
            found[name] = lines
    for lines in found.values():
        print("\n".join(lines))  # shown with -s, and on failure
    unexpected = {name: lines for name, lines in found.items() if name not in NAMING_PLATFORMS}
    assert not unexpected, "platform names outside the allowlist:\n" + "\n".join(
        line for lines in unexpected.values() for line in lines)
    stale = sorted(set(NAMING_PLATFORMS) - set(found))
    assert not stale, f"these files name no platform any more: remove them from the list: {stale}"
    assert not any(name.startswith("actors/") for name in NAMING_PLATFORMS)
