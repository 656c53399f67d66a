"""`cluster.yaml` is a valid Ray cluster-launcher config (Ray's own autoscaler schema)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[3]


def _config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_autoscaler_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_config(), schema)
    broken = _config() | {"max_workers": "four", "head_node_typo": "head"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cluster_yaml_installs_arbflow_and_points_at_redis_and_the_s3_lake() -> None:
    config = _config()
    assert config["provider"]["type"] == "aws"
    assert set(config["available_node_types"]) == {"head", "worker"}
    setup = "\n".join(config["setup_commands"])
    assert "make venv" in setup
    assert "ARBFLOW_REDIS__URL" in setup and "ARBFLOW_LAKE__URL" in setup and "s3://" in setup
    assert "RAY_ENABLE_UV_RUN_RUNTIME_ENV=0" in setup


def test_cluster_yaml_launches_on_a_current_python_with_ray_on_the_path() -> None:
    config = _config()
    for node in config["available_node_types"].values():
        assert "ubuntu/server/24.04" in node["node_config"]["ImageId"]  # Python 3.12
        assert node["node_config"]["IamInstanceProfile"]["Name"]  # S3 through the instance role
    setup = "\n".join(config["setup_commands"])
    assert "/usr/local/bin/ray" in setup
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all(cmd.split()[0] == "ray" for cmd in starts)


def test_cluster_yaml_keeps_secrets_and_local_state_off_the_nodes_copy() -> None:
    config = _config()
    assert config["rsync_filter"] == [".gitignore"]
    assert {".venv/", "var/"} <= set(config["rsync_exclude"])
    assert config["file_mounts"]["/home/ubuntu/arbflow.env"] == "./.env"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert "arbflow.env" in "\n".join(config["setup_commands"])


def test_cluster_yaml_exports_metrics_and_keeps_the_dashboard_off_public_interfaces() -> None:
    config = _config()
    head = " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in yaml.safe_dump(config)
    assert "--dashboard-host=127.0.0.1" in head
    assert "--metrics-export-port=8080" in head
    assert "--metrics-export-port=8080" in " ".join(config["worker_start_ray_commands"])
