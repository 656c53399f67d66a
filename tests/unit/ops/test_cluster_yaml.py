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
