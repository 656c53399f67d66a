"""`cluster.yaml` and `cluster.local.yaml` are valid Ray cluster-launcher configs (Ray's own
autoscaler schema), rendered from one source (cluster/, serve.cluster_config)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from serve.cluster_config import SHARED, ClusterConfigError, main, render, target_source

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
    assert "~/.local/bin/" in setup and "arbflow-venv/bin/ray" in setup  # a login shell's PATH has it
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all(cmd.split()[0] == "ray" for cmd in starts)


def test_cluster_yaml_keeps_secrets_and_local_state_off_the_nodes_copy() -> None:
    config = _config()
    assert config["rsync_filter"] == [".gitignore"]
    assert {".venv/", "var/", ".git"} <= set(config["rsync_exclude"])
    assert config["file_mounts"]["/home/ubuntu/arbflow.env"] == "./.env"
    # the launcher hashes a mount's whole source: never the checkout (.venv/, var/), and
    # the nodes' venv lies outside the mount (the head's autoscaler hashes it too)
    assert config["file_mounts"]["/home/ubuntu/arbflow"] == "./var/cluster-source"
    assert config["file_mounts_sync_continuously"] is False
    assert "UV_PROJECT_ENVIRONMENT=$HOME/arbflow-venv make venv" in "\n".join(config["setup_commands"])
    assert "cluster-source:" in (REPO / "Makefile").read_text()
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert "arbflow.env" in "\n".join(config["setup_commands"])


def test_cluster_yaml_exports_metrics_and_keeps_the_dashboard_off_public_interfaces() -> None:
    config = _config()
    head = " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in yaml.safe_dump(config)
    assert "--dashboard-host=127.0.0.1" in head
    assert "--metrics-export-port=8080" in head
    assert "--metrics-export-port=8080" in " ".join(config["worker_start_ray_commands"])


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_the_committed_configs_are_their_rendering() -> None:
    assert main(["--check"]) == 0
    assert (REPO / "cluster.yaml").read_text() == render("aws")
    assert (REPO / "cluster.local.yaml").read_text() == render("local")


def test_both_targets_share_the_setup_and_start_commands() -> None:
    aws, local = _load("cluster.yaml"), _load("cluster.local.yaml")
    assert local["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    shared = ("rsync_filter", "rsync_exclude", "head_start_ray_commands", "worker_start_ray_commands")
    for key in shared:
        assert aws[key] == local[key], key
    # the same commands; only the target's parameters differ: the venv's extra groups (boto3
    # for the AWS autoscaler) and the defaults for Redis and the lake
    differs = [(a, b) for a, b in zip(aws["setup_commands"], local["setup_commands"], strict=True) if a != b]
    assert len(differs) == 2
    assert differs[0] == (
        'cd ~/arbflow && UV_PROJECT_ENVIRONMENT=$HOME/arbflow-venv make venv VENV_GROUPS="--group ops"',
        "cd ~/arbflow && UV_PROJECT_ENVIRONMENT=$HOME/arbflow-venv make venv",
    )
    assert "ARBFLOW_REDIS__URL" in differs[1][0]
    assert local["file_mounts"] == {"/root/arbflow": "./var/cluster-source", "/root/arbflow.env": "./.env"}
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(local, schema)


def test_a_variant_changes_parameters_not_commands(tmp_path: Path) -> None:
    text = render("local", home="/tmp/node", gcs_port=46379, dashboard_port=48265)
    config = yaml.safe_load(text)
    head = " ".join(config["head_start_ray_commands"])
    assert "--port=46379" in head and "--dashboard-port=48265" in head
    assert "$RAY_HEAD_IP:46379" in " ".join(config["worker_start_ray_commands"])
    assert set(config["file_mounts"]) == {"/tmp/node/arbflow", "/tmp/node/arbflow.env"}
    assert config["setup_commands"] == _load("cluster.local.yaml")["setup_commands"]
    with pytest.raises(ClusterConfigError, match="no parameters"):
        render("local", gcs_prot=1)
    with pytest.raises(ClusterConfigError, match="unknown target"):
        render("gcp")


def test_a_broken_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "cluster"
    source.mkdir()
    params, provider = target_source("local")
    (source / SHARED).write_text((REPO / "cluster" / SHARED).read_text() + "extra: {{nowhere}}\n")
    (source / "local.yaml").write_text(yaml.safe_dump(params) + "---\n" + provider)
    with pytest.raises(ClusterConfigError, match="needs parameters nowhere"):
        render("local", source_dir=source)
    (source / SHARED).write_text((REPO / "cluster" / SHARED).read_text())
    (source / "local.yaml").write_text(yaml.safe_dump(params) + "---\n" + provider + "max_workers: many\n")
    with pytest.raises(ClusterConfigError, match="not a Ray cluster-launcher config"):
        render("local", source_dir=source)
    (source / "local.yaml").write_text(provider)
    with pytest.raises(ClusterConfigError, match="a line '---'"):
        render("local", source_dir=source)
