"""Chromium for the dashboard's browser tests: Debian's `chromium` package, driven by
Playwright for Python through `executable_path` (Playwright's own browser downloads are
never used)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from infra.errors import InfraError

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CMD = ("apt-get", "install", "-y", "--no-install-recommends", "chromium")
INSTALL_HINT = f"sudo apt-get update && sudo {' '.join(INSTALL_CMD)}"


def ensure_chromium() -> Path:
    """Return Chromium's path, installing Debian's package when running as root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise InfraError(f"Chromium is missing ({CHROMIUM}). Install it with: {INSTALL_HINT}")
    subprocess.run(["apt-get", "update", "-q"], check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(list(INSTALL_CMD), check=True, env=env)
    if not CHROMIUM.exists():
        raise InfraError(f"installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM
