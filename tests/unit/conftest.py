"""Unit tests see no `STOCKCDC_*` variable of the shell that runs them: their settings
are the defaults plus what each test sets (the test run itself sets local ports)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_stockcdc_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("STOCKCDC_")]:
        monkeypatch.delenv(name)
