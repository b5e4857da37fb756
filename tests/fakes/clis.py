"""The real coding-agent CLIs for the tests, installed with npm into ``<repo>/.agents``.

``python3 -m tests.fakes.clis`` installs them (``.ci/run`` does so); the tests
call :func:`cli_path`, which installs them on first use when they are missing
and fails the test with what to run when that is not possible.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".agents"
#: The versions the translators were checked against.
PACKAGES = {"codex": ("@openai/codex", "0.169.0"),
            "claude": ("@anthropic-ai/claude-code", "2.1.197")}
INSTALL_HINT = (f"npm install --prefix {PREFIX} "
                + " ".join(f"{name}@{version}" for name, version in PACKAGES.values()))


def _installed_version(cli: str) -> str | None:
    package = PREFIX / "node_modules" / PACKAGES[cli][0] / "package.json"
    try:
        return str(json.loads(package.read_text(encoding="utf-8")).get("version"))
    except (OSError, ValueError):
        return None


def _works(cli: str) -> bool:
    binary = PREFIX / "node_modules" / ".bin" / cli
    if _installed_version(cli) != PACKAGES[cli][1] or not binary.exists():
        return False
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, timeout=60,
                                check=False)
    except OSError:
        return False
    return result.returncode == 0


def installed(cli: str) -> bool:
    """True when the pinned ``cli`` (``codex`` or ``claude``) is in :data:`PREFIX` and runs.

    Runs ``<cli> --version`` (at most 60 s); installs nothing.
    """
    return _works(cli)


def install() -> str | None:
    """Install the pinned CLIs into :data:`PREFIX` unless they already work.

    Returns:
        None on success, else what went wrong (one paragraph).
    """
    if all(_works(cli) for cli in PACKAGES):
        return None
    npm = shutil.which("npm")
    if npm is None:
        return f"npm is not installed; install Node.js 18+ and run: {INSTALL_HINT}"
    PREFIX.mkdir(exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.values()]
    try:
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                                 str(PREFIX), *specs], capture_output=True, text=True,
                                timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install failed ({exc}); run: {INSTALL_HINT}"
    if result.returncode != 0:
        return f"npm install failed: {result.stderr[-2000:]}\nrun: {INSTALL_HINT}"
    claude_pkg = PREFIX / "node_modules" / PACKAGES["claude"][0]
    if not _works("claude") and (claude_pkg / "install.cjs").exists():
        # npm may skip install scripts; the script puts the native binary in place.
        node = shutil.which("node") or "node"
        subprocess.run([node, "install.cjs"], cwd=claude_pkg, capture_output=True,
                       timeout=300, check=False)
    broken = [cli for cli in PACKAGES if not _works(cli)]
    if broken:
        return f"installed, but {', '.join(broken)} --version fails; run: {INSTALL_HINT}"
    return None


@functools.cache
def _ensure() -> str | None:
    return install()


def cli_path(cli: str) -> Path:
    """The installed CLI (``codex`` or ``claude``).

    Installs the CLIs on first use; fails the calling test, saying what to run,
    when they cannot be installed.
    """
    import pytest  # here, so that ``python3 -m tests.fakes.clis`` needs only the stdlib

    problem = _ensure()
    if problem:
        pytest.fail(f"the {cli} CLI is needed for this test: {problem}", pytrace=False)
    return PREFIX / "node_modules" / ".bin" / cli


if __name__ == "__main__":
    trouble = install()
    if trouble:
        print(trouble, file=sys.stderr)
        sys.exit(1)
    print(f"agent CLIs ready in {PREFIX}")
