"""The generated Serve config: Ray Serve's own schema accepts it, and the settings survive the trip."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import yaml

from core.settings import Settings, load_settings
from serve.deploy import HA_PROXY_ENV, IMPORT_PATH, render_serve_config, serve_config, settings_env

with warnings.catch_warnings():  # Ray Serve's own pydantic models use deprecated Field kwargs
    warnings.simplefilter("ignore", DeprecationWarning)
    from ray.serve.schema import ServeDeploySchema


def _settings() -> Settings:
    return Settings(
        data_dir=Path("/srv/arbflow"),
        superadmin_ids=[11, 22],
        fees={"binance": {"spot_taker": 0.001}},
        secret_key="s3cr3t-key",
        redis={"url": "redis://redis.internal:6379/0"},
        lake={
            "url": "s3://arbflow-lake/prod",
            "endpoint_url": "http://minio:9000",
            "secret_access_key": "xyz",
        },
        market={"exchanges": ["binance", "okx"], "symbols": ["BTC/USDT", "BTC/USDT:USDT"], "freshness_s": 3},
        telegram={"token": "123:ABC", "public_url": "https://bot.example.com", "global_rate": 25},
        distribution={"shards": 16, "tiers": {"free": {"daily_quota": 10}}, "channels": ["@arbflow"]},
        ray={"address": "auto", "namespace": "prod"},
        http={"host": "0.0.0.0", "port": 8080},
    )


def test_the_rendered_yaml_validates_against_ray_serves_schema() -> None:
    text = render_serve_config(_settings(), num_replicas=3, max_ongoing_requests=128)
    assert text.startswith("# Ray Serve config for arbflow")
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    [app] = schema.applications
    assert app.import_path == IMPORT_PATH == "serve.app:build_app"
    assert app.name == "arbflow" and app.route_prefix == "/"
    assert app.args == {"num_replicas": 3, "max_ongoing_requests": 128}
    assert (schema.http_options.host, schema.http_options.port) == ("0.0.0.0", 8080)
    assert schema.controller_options is None
    env = app.runtime_env["env_vars"]
    assert env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "0"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env


def test_ha_proxy_mode_reaches_the_controller_and_the_replicas() -> None:
    config = serve_config(_settings(), ha_proxy=True)
    schema = ServeDeploySchema.model_validate(config)
    assert schema.controller_options is not None
    assert schema.controller_options.runtime_env == {"env_vars": HA_PROXY_ENV}
    env = schema.applications[0].runtime_env["env_vars"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def test_secrets_stay_out_unless_asked_for() -> None:
    env = settings_env(_settings())
    assert "ARBFLOW_TELEGRAM__TOKEN" not in env
    assert "ARBFLOW_SECRET_KEY" not in env
    assert "ARBFLOW_LAKE__SECRET_ACCESS_KEY" not in env
    assert "ARBFLOW_RAY__ADDRESS" not in env  # replicas already run on the cluster
    assert env["ARBFLOW_REDIS__URL"] == "redis://redis.internal:6379/0"
    with_password = Settings(redis={"url": "redis://:hunter2@redis.internal:6379/0"})
    assert "ARBFLOW_REDIS__URL" not in settings_env(with_password)
    full = settings_env(_settings(), include_secrets=True)
    assert full["ARBFLOW_TELEGRAM__TOKEN"] == "123:ABC"
    assert "hunter2" in settings_env(with_password, include_secrets=True)["ARBFLOW_REDIS__URL"]


def test_the_settings_read_back_from_the_configs_environment_are_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = _settings()
    env = serve_config(original, include_secrets=True)["applications"][0]["runtime_env"]["env_vars"]
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key in [k for k in os.environ if k.startswith("ARBFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    back = load_settings()
    expected = original.model_copy(update={"ray": original.ray.model_copy(update={"address": ""})})
    assert back.model_dump() == expected.model_dump()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        serve_config(_settings(), num_replicas=0)
    with pytest.raises(ValueError):  # Serve's own schema refuses it (a pydantic ValidationError)
        serve_config(_settings(), port="eighty")  # type: ignore[arg-type]


def test_the_code_version_is_in_the_runtime_env_so_new_code_replaces_the_replicas() -> None:
    from serve.version import ENV_VAR, code_version

    env = serve_config(_settings())["applications"][0]["runtime_env"]["env_vars"]
    assert env[ENV_VAR] == code_version() != ""
    old = serve_config(_settings(), version="0.1.0+aaaaaaaaaaaa")
    new = serve_config(_settings(), version="0.1.0+bbbbbbbbbbbb")
    assert old["applications"][0]["runtime_env"] != new["applications"][0]["runtime_env"]
    assert old["applications"][0]["args"] == new["applications"][0]["args"]


def test_print_config_carries_the_code_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from serve.cli import app
    from serve.version import code_version

    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["serve", "--print-config"])
    assert out.exit_code == 0, out.output
    [application] = yaml.safe_load(out.output)["applications"]
    assert application["runtime_env"]["env_vars"]["ARBFLOW_CODE_VERSION"] == code_version()


def _built_config(args: dict) -> object:
    from serve.app import build_app

    app = build_app(args)
    return app._bound_deployment.init_args[0]  # the IngressConfig every replica gets


def test_the_app_carries_one_code_version_for_all_its_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved where the app is built (a replica started later, after the files changed,
    still creates and checks the shards with it): the Serve config's, else this code's."""
    from serve.version import ENV_VAR, code_version

    settings = Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:1/0"})
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert _built_config({"settings": settings}).code_version == code_version()  # type: ignore[attr-defined]
    monkeypatch.setenv(ENV_VAR, "0.1.0+deployed0000")
    assert _built_config({"settings": settings}).code_version == "0.1.0+deployed0000"  # type: ignore[attr-defined]
    given = _built_config({"settings": settings, "code_version": "0.2.0+given0000000"})
    assert given.code_version == "0.2.0+given0000000"  # type: ignore[attr-defined]


def test_replicas_reserve_no_cpu_so_any_count_fits_the_host(tmp_path: Path) -> None:
    """Serve reserves one CPU a replica by default: `--replicas 3` on two cores waited forever
    for CPUs. Ours reserve none, like every actor of ours."""
    from serve.app import build_app

    settings = Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:1/0"})
    app = build_app({"settings": settings, "num_replicas": 3, "webhook_secret": "s", "admin_token": "t"})
    deployment = app._bound_deployment
    assert deployment.num_replicas == 3
    assert deployment.ray_actor_options == {"num_cpus": 0}
