"""The CLI's exit codes: `stockcdc demo` ends like `serve` (1 when the projector died,
0 on Ctrl-C), so a supervisor or a script sees a failed demo."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from stockcdc import demo
from stockcdc.cli import app
from stockcdc.settings import Settings


def _demo_ending(monkeypatch: pytest.MonkeyPatch, end: int | type[BaseException]) -> None:
    def run_demo(settings: Settings, console: object, *, rate: float, keep_services: bool) -> int:
        if isinstance(end, int):
            return end
        raise end()

    monkeypatch.setattr(demo, "run_demo", run_demo)


def test_demo_exits_1_when_its_projector_died(monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_ending(monkeypatch, 1)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 1, result.output
    assert "the projector died" in result.output


@pytest.mark.parametrize("end", [0, KeyboardInterrupt])
def test_demo_stopped_by_the_user_exits_0(
    monkeypatch: pytest.MonkeyPatch, end: int | type[BaseException]
) -> None:
    _demo_ending(monkeypatch, end)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "demo stopped" in result.output
