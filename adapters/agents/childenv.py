"""The environment of an agent child process: minimal, never the bridge's secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Variables copied from the bridge's environment into a child's (nothing secret).
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TERM",
            "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A child's environment: :data:`BASE_ENV` from ours, then ``extra`` on top.

    The bridge's own secrets (Fabric keys, tokens) are never copied.
    """
    env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.update(extra)
    return env
