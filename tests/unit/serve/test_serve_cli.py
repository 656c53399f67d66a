"""``arbflow serve --print-config``: a Serve config that Ray Serve's own schema accepts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from serve.cli import app


def test_print_config_is_a_valid_serve_config_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ARBFLOW_TELEGRAM__TOKEN", "123:secret-token")
    result = CliRunner().invoke(
        app, ["serve", "--print-config", "--replicas", "3", "--host", "0.0.0.0", "--ha-proxy"]
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    with warnings.catch_warnings():  # Serve's pydantic models warn at import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "serve.app:build_app"
    assert application["args"]["num_replicas"] == 3
    env = application["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and config["http_options"]["host"] == "0.0.0.0"
    assert "secret-token" not in result.output
