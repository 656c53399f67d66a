"""How DuckDB reads an S3 lake: its own httpfs where it can be loaded without a download,
else the lake's s3fs filesystem (no network: the lake is never listed or read here)."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from core.settings import LakeSettings
from pipeline import query
from pipeline.lake import Lake
from pipeline.query import attach_s3, connect, httpfs_secret_sql, httpfs_target


def _s3_lake(**settings: object) -> Lake:
    return Lake.from_settings(LakeSettings(url="s3://arb-lake/prod", **settings))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _fresh_announcements() -> None:
    query._announced.clear()


def test_the_configured_file_wins_and_a_missing_one_is_not_replaced() -> None:
    assert httpfs_target("/x/httpfs.duckdb_extension", configured_exists=True, installed=True)[0] == (
        "/x/httpfs.duckdb_extension"
    )
    target, reason = httpfs_target("/x/httpfs.duckdb_extension", configured_exists=False, installed=True)
    assert target is None and "does not exist" in reason
    assert httpfs_target("", configured_exists=False, installed=True)[0] == "httpfs"
    target, reason = httpfs_target("", configured_exists=False, installed=False)
    assert target is None and "no httpfs" in reason


def test_secret_for_a_plain_http_endpoint_with_keys() -> None:
    lake = _s3_lake(
        endpoint_url="http://127.0.0.1:8333/",
        access_key_id="AK",
        secret_access_key="s'cret",
        region="eu-west-1",
    )
    sql = httpfs_secret_sql(lake)
    assert sql.startswith('CREATE OR REPLACE SECRET "arbflow_lake" (TYPE s3, ')
    assert "ENDPOINT '127.0.0.1:8333'" in sql and "USE_SSL false" in sql and "URL_STYLE 'path'" in sql
    assert "REGION 'eu-west-1'" in sql and "KEY_ID 'AK'" in sql and "SECRET 's''cret'" in sql
    assert "SCOPE 's3://arb-lake'" in sql


def test_secret_for_https_anonymous_and_aws() -> None:
    https = httpfs_secret_sql(
        _s3_lake(endpoint_url="https://r2.example.com", anonymous=True, access_key_id="AK")
    )
    assert "ENDPOINT 'r2.example.com'" in https and "USE_SSL true" in https
    assert "KEY_ID" not in https and "SECRET '" not in https  # anonymous: unsigned requests
    aws = httpfs_secret_sql(_s3_lake(access_key_id="AK", secret_access_key="SK"))
    assert "ENDPOINT" not in aws and "USE_SSL true" in aws and "REGION 'us-east-1'" in aws


def test_without_httpfs_the_s3fs_filesystem_is_registered_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lake = _s3_lake(endpoint_url="http://127.0.0.1:9")
    caplog.set_level(logging.INFO, logger="pipeline.query")
    for _ in range(2):
        con = duckdb.connect()
        installed = con.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
        ).fetchall()
        if installed and installed[0][0]:
            pytest.skip("this DuckDB has httpfs installed")
        assert attach_s3(con, lake) == "fsspec"
        assert "s3" in con.list_filesystems()
        con.register("t", pa.table({"a": [1]}))  # the connection is free for the views
        assert con.execute("SELECT a FROM t").fetchall() == [(1,)]
        con.close()
    said = [r for r in caplog.records if "DuckDB reads the S3 lake" in r.getMessage()]
    assert len(said) == 1 and "through fsspec" in said[0].getMessage()
    assert said[0].levelno == logging.INFO


@pytest.mark.parametrize("content", [None, b"not an extension" * 100])
def test_a_configured_file_that_cannot_load_falls_back_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None
) -> None:
    path = tmp_path / "httpfs.duckdb_extension"
    if content is not None:
        path.write_bytes(content)
    lake = _s3_lake(endpoint_url="http://127.0.0.1:9", duckdb_httpfs=str(path))
    assert lake.duckdb_httpfs == str(path)
    con = duckdb.connect()
    assert attach_s3(con, lake) == "fsspec"
    assert "s3" in con.list_filesystems()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "through fsspec" in warned[0].getMessage()
    assert ("does not exist" if content is None else "failed") in warned[0].getMessage()
    con.close()


def test_connect_to_an_s3_lake_uses_the_decision(caplog: pytest.LogCaptureFixture) -> None:
    """``connect`` goes through :func:`attach_s3` (an empty dataset list reads nothing)."""
    caplog.set_level(logging.INFO, logger="pipeline.query")
    con = connect(
        _s3_lake(endpoint_url="http://127.0.0.1:9", duckdb_httpfs="/nonexistent/httpfs.ext"), datasets=[]
    )
    assert "s3" in con.list_filesystems()
    assert any("through fsspec" in r.getMessage() for r in caplog.records)
    con.close()


def test_the_setting_reaches_the_lake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.settings import load_settings

    monkeypatch.chdir(tmp_path)  # no .env of the worktree
    monkeypatch.setenv("ARBFLOW_LAKE__URL", "s3://arb-lake/prod")
    monkeypatch.setenv("ARBFLOW_LAKE__DUCKDB_HTTPFS", "/opt/duckdb/httpfs.duckdb_extension")
    settings = load_settings()
    assert Lake.from_settings(settings.lake).duckdb_httpfs == "/opt/duckdb/httpfs.duckdb_extension"
