"""A Ray Serve config file for ``serve deploy``, generated from the Settings.

    from serve.deploy import render_serve_config
    print(render_serve_config(load_settings(), num_replicas=2, ha_proxy=True))

The config deploys one application, ``arbflow``, built by ``serve.app:build_app``. The
settings travel as ``ARBFLOW_*`` environment variables in the application's
``runtime_env`` (the builder reads them with ``load_settings()`` on the cluster), so the
file stays readable and diffable, next to ``ARBFLOW_CODE_VERSION`` (serve.version: the
package version and a hash of the source tree, so a config for new code makes
``serve deploy`` replace the replicas); secrets (the bot token, the webhook secret, the secret
key, the lake's keys, a Redis URL with a password) are left out unless asked for, and
belong in the nodes' environment (``cluster.yaml``) or a secret store.

``ha_proxy=True`` adds Serve's high-throughput mode (``RAY_SERVE_ENABLE_HA_PROXY=1``,
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``; needs ``haproxy`` on the nodes) to the controller's
and the replicas' environment. Serve reads these flags when its processes start, and
the controller options apply only when the controller is first created: set them in the
environment of ``ray start`` as well (docs/operations.md).

:func:`serve_config` returns the dict, validated against Ray Serve's own
``ray.serve.schema.ServeDeploySchema``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from core.settings import Settings

APP_NAME = "arbflow"
IMPORT_PATH = "serve.app:build_app"
ENV_PREFIX = "ARBFLOW_"
HA_PROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
BASE_ENV = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
"""Workers share the nodes' venv: Ray must not rebuild one per worker under ``uv run``."""

SECRETS = frozenset(
    {
        ("telegram", "token"),
        ("telegram", "webhook_secret"),
        ("secret_key",),
        ("lake", "access_key_id"),
        ("lake", "secret_access_key"),
    }
)
"""Settings never written into the config unless ``include_secrets``."""
NOT_FOR_REPLICAS = frozenset({("ray", "address"), ("ray", "num_cpus"), ("ray", "include_dashboard")})
"""How a driver joins or starts Ray: meaningless inside a replica that already runs on the cluster."""


def _is_secret(path: tuple[str, ...], value: Any) -> bool:
    if path in SECRETS:
        return True
    if path == ("redis", "url") and isinstance(value, str) and value:
        return urlsplit(value).password is not None
    return False


def _env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))  # lists and dicts: every list setting takes JSON


def _flatten(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        here = (*path, key)
        if isinstance(value, dict) and not path and key not in ("fees",):
            yield from _flatten(value, here)
        else:
            yield here, value


def settings_env(
    settings: Settings, *, include_secrets: bool = False, only_changed: bool = True
) -> dict[str, str]:
    """The settings as ``ARBFLOW_SECTION__FIELD`` variables (what ``load_settings()`` reads back).

    ``only_changed``: only what differs from the defaults (the rest needs no variable).
    """
    data = settings.model_dump(mode="json", exclude_defaults=only_changed)
    env: dict[str, str] = {}
    for path, value in _flatten(data):
        if path in NOT_FOR_REPLICAS or (not include_secrets and _is_secret(path, value)):
            continue
        if value is None:
            continue  # None is the default of every optional setting
        env[ENV_PREFIX + "__".join(p.upper() for p in path)] = _env_value(value)
    return dict(sorted(env.items()))


def serve_config(
    settings: Settings,
    *,
    num_replicas: int = 1,
    max_ongoing_requests: int | None = None,
    host: str | None = None,
    port: int | None = None,
    ha_proxy: bool = False,
    include_secrets: bool = False,
    route_prefix: str = "/",
    extra_env: Mapping[str, str] | None = None,
    app_args: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The Serve config (a ``ServeDeploySchema``) for ``serve deploy``, validated by Ray Serve.

    ``version`` (default :func:`serve.version.code_version` of this checkout) goes into the
    runtime_env as ``ARBFLOW_CODE_VERSION``: a config for other code differs there, so
    ``serve deploy`` replaces the replicas instead of keeping the running ones."""
    from serve.version import ENV_VAR, code_version

    with warnings.catch_warnings():  # Ray Serve's pydantic models warn at import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray.serve.schema import ServeDeploySchema

    if num_replicas < 1:
        raise ValueError("num_replicas must be at least 1")
    env = {**BASE_ENV, **settings_env(settings, include_secrets=include_secrets)}
    env[ENV_VAR] = version if version is not None else code_version()
    if ha_proxy:
        env.update(HA_PROXY_ENV)
    env.update(extra_env or {})
    args: dict[str, Any] = {"num_replicas": num_replicas}
    if max_ongoing_requests is not None:
        args["max_ongoing_requests"] = max_ongoing_requests
    args.update(app_args or {})
    config: dict[str, Any] = {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": host if host is not None else settings.http.host,
            "port": port if port is not None else settings.http.port,
        },
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": route_prefix,
                "import_path": IMPORT_PATH,
                "runtime_env": {"env_vars": env},
                "args": args,
            }
        ],
    }
    if ha_proxy:
        config["controller_options"] = {"runtime_env": {"env_vars": dict(HA_PROXY_ENV)}}
    ServeDeploySchema.model_validate(config)  # raises on anything Serve would refuse
    return config


def render_serve_config(settings: Settings, **options: Any) -> str:
    """:func:`serve_config` as YAML, with a header saying how it was made and how to use it."""
    body = yaml.safe_dump(serve_config(settings, **options), sort_keys=False, default_flow_style=False)
    header = (
        "# Ray Serve config for arbflow, generated from the settings (serve.deploy).\n"
        "# Deploy: serve deploy <this file> --address http://<head>:8265\n"
        "# Secrets are not in here: set them in the nodes' environment.\n"
    )
    return header + body


__all__ = [
    "APP_NAME",
    "HA_PROXY_ENV",
    "IMPORT_PATH",
    "SECRETS",
    "render_serve_config",
    "serve_config",
    "settings_env",
]
