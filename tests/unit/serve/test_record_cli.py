"""``arbflow record`` refuses settings it cannot work with, clearly, before recording anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from serve.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exchanges", "binanse"], "did you mean binance"),
        (["--symbols", "top:0"], "top:N"),
    ],
)
def test_record_refuses_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.ndjson"
    result = CliRunner().invoke(app, ["record", "--duration", "1", "--out", str(out), *args])
    assert result.exit_code != 0
    text = result.output + (str(result.exception) if result.exception else "")
    assert message in text
    assert not out.exists() or out.read_text() == ""
