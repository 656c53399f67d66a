"""Retention: hour partitions older than a dataset's ``ARBFLOW_LAKE__RETENTION`` days are deleted.

An hour partition expires when its whole hour lies before ``now - days``. Only the part
of the hive tree before that cutoff is listed (:meth:`Lake.window_files` with an open
start), so a prune of a long S3 lake does not list the hours it keeps. The same
:func:`plan` serves ``arbflow lake prune --dry-run`` (what would go) and :func:`prune`
(the sink actor's scheduled run and ``arbflow lake prune``): the dry run lists exactly
what a run at the same ``now`` deletes. Pruning is idempotent (a second run finds
nothing) and logged (one INFO line per dataset with deletions).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.errors import LakeError
from pipeline.lake import Lake, hour_of
from pipeline.schemas import DATASET_PATHS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExpiredHour:
    """One hour partition past its dataset's retention, with its files."""

    dataset: str
    hour: datetime
    files: tuple[str, ...]
    bytes: int

    def as_row(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "hour": self.hour.strftime("%Y-%m-%dT%H:00Z"),
            "files": len(self.files),
            "bytes": self.bytes,
        }


@dataclass(slots=True)
class PruneReport:
    now: datetime
    dry_run: bool
    expired: list[ExpiredHour] = field(default_factory=list)
    deleted_files: int = 0

    @property
    def partitions(self) -> int:
        return len(self.expired)

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.expired)


def check_retention(retention: Mapping[str, float]) -> dict[str, float]:
    """The datasets with a finite retention (days > 0); an unknown dataset name is an error."""
    unknown = sorted(set(retention) - set(DATASET_PATHS))
    if unknown:
        raise LakeError(
            f"ARBFLOW_LAKE__RETENTION names unknown datasets {unknown}; known: {', '.join(DATASET_PATHS)}"
        )
    return {name: float(days) for name, days in retention.items() if float(days) > 0}


def cutoff(now: datetime, days: float) -> datetime:
    """The first hour kept: hours starting before it are wholly older than ``now - days``."""
    edge = now.astimezone(UTC) - timedelta(days=days)
    return edge.replace(minute=0, second=0, microsecond=0)


def plan(lake: Lake, retention: Mapping[str, float], now: datetime) -> list[ExpiredHour]:
    """Every expired hour partition, by dataset then hour (nothing is deleted)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    out: list[ExpiredHour] = []
    for dataset, days in sorted(check_retention(retention).items()):
        keep_from = cutoff(now, days)
        by_hour: dict[datetime, dict[str, int]] = {}
        for path, size in lake.window_files(dataset, None, keep_from).items():
            hour = hour_of(path)
            if hour is not None and hour < keep_from:
                by_hour.setdefault(hour, {})[path] = size
        for hour, files in sorted(by_hour.items()):
            out.append(ExpiredHour(dataset, hour, tuple(sorted(files)), sum(files.values())))
    return out


def prune(
    lake: Lake, retention: Mapping[str, float], now: datetime | None = None, *, dry_run: bool = False
) -> PruneReport:
    """Delete (or, with ``dry_run``, only list) the expired hour partitions."""
    now = now or datetime.now(UTC)
    report = PruneReport(now=now, dry_run=dry_run, expired=plan(lake, retention, now))
    if dry_run:
        return report
    by_dataset: dict[str, list[ExpiredHour]] = {}
    for item in report.expired:
        lake.delete(list(item.files))
        report.deleted_files += len(item.files)
        if lake.is_local:
            _remove_empty_dirs(lake, item)
        by_dataset.setdefault(item.dataset, []).append(item)
    for dataset, items in by_dataset.items():
        log.info(
            "lake retention: %s: deleted %d hour partitions (%s .. %s), %d files, %d bytes",
            dataset,
            len(items),
            items[0].hour.isoformat(),
            items[-1].hour.isoformat(),
            sum(len(i.files) for i in items),
            sum(i.bytes for i in items),
        )
    return report


def _remove_empty_dirs(lake: Lake, item: ExpiredHour) -> None:
    """Local lakes: the hour directory (with any crash-leftover temp files), then its day,
    month and year directories when they became empty."""
    directory = lake.partition_path(item.dataset, item.hour)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.startswith(".") and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
    root = lake.dataset_root(item.dataset)
    while directory.startswith(root + "/"):
        try:
            os.rmdir(directory)
        except OSError:  # not empty (or already gone): stop climbing
            return
        directory = directory.rsplit("/", 1)[0]
