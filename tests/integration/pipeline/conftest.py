"""A private SeaweedFS S3 server for the session, and one lake prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.settings import LakeSettings
from tests.support.seaweed import SeaweedS3


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed"), bucket="arbflow-lake") as server:
        yield server


@pytest.fixture
def s3_lake_settings(seaweed: SeaweedS3) -> LakeSettings:
    """An anonymous ``s3://`` lake under a prefix of its own."""
    return LakeSettings(
        url=f"s3://{seaweed.bucket}/test-{uuid.uuid4().hex[:12]}",
        endpoint_url=seaweed.endpoint_url,
        anonymous=True,
        compact_min_files=3,
    )
