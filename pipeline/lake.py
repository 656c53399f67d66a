"""The Parquet lake on fsspec: a local directory or an S3-compatible bucket.

``Lake`` knows where datasets live (``DATASET_PATHS``), how hour partitions are named
(``year=YYYY/month=MM/day=DD/hour=HH``), and how to make a file appear atomically:
on a local disk a hidden temp file in the same directory, fsync, then ``os.replace``;
on S3 one PUT of the whole object. Every fsspec/s3fs/OS error is translated into
:class:`core.errors.LakeError`. See ``docs/lake.md`` for the guarantees.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from core.errors import LakeError
from core.settings import LakeSettings
from pipeline.schemas import DATASET_PATHS

log = logging.getLogger(__name__)

PARQUET_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
"""Temp files are ``.<name>.parquet.tmp``: hidden and not ``*.parquet``, so readers skip them."""

_PARTITION_RE = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})(?:/|$)")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on device (the disk is full)"
    if isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc})"
    if isinstance(exc, FileNotFoundError):
        return f"not found ({exc})"
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"


@contextlib.contextmanager
def _translate(action: str, path: str) -> Iterator[None]:
    """Turn any library error raised inside into a LakeError naming what and where."""
    try:
        yield
    except LakeError:
        raise
    except Exception as exc:
        raise LakeError(f"lake {action} failed for {path}: {_describe(exc)}") from exc


def hour_of(path: str) -> datetime | None:
    """The UTC start of the hour partition a path lies in, or None outside partitions."""
    match = _PARTITION_RE.search(path)
    if match is None:
        return None
    year, month, day, hour = (int(g) for g in match.groups())
    return datetime(year, month, day, hour, tzinfo=UTC)


def _hour_floor(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _span(parts: tuple[int, ...]) -> tuple[datetime, datetime]:
    """First and last hour of a partial partition key ``(year[, month[, day]])``."""
    year = parts[0]
    if len(parts) == 1:
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year, 12, 31, 23, tzinfo=UTC)
    month = parts[1]
    if len(parts) == 2:
        first = datetime(year, month, 1, tzinfo=UTC)
        following = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
        return first, following - timedelta(hours=1)
    day = datetime(year, month, parts[2], tzinfo=UTC)
    return day, day + timedelta(hours=23)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


class Lake:
    """A lake root on an fsspec filesystem.

    Paths handed in and out are fsspec paths without protocol (``/abs/dir/...`` for a
    local lake, ``bucket/prefix/...`` for S3); :meth:`uri` adds the protocol back for
    DuckDB and Polars.
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        root: str,
        *,
        protocol: str = "file",
        storage_options: dict[str, str] | None = None,
        trace_path: str = "",
        duckdb_httpfs: str = "",
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.protocol = protocol
        self.storage_options: dict[str, str] = dict(storage_options or {})
        """Polars/object_store options for ``scan_parquet`` (S3 only)."""
        self.trace_path = trace_path
        """When set, windowed reads append what they list and read to this file."""
        self.duckdb_httpfs = duckdb_httpfs
        """A DuckDB httpfs extension file to load for S3 (``ARBFLOW_LAKE__DUCKDB_HTTPFS``)."""

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: LakeSettings) -> Lake:
        url = settings.url.strip()
        if not url:
            raise LakeError(
                "lake url is empty: set ARBFLOW_LAKE__URL to a path, file://… or s3://bucket/prefix"
            )
        if url.startswith(("s3://", "s3a://")):
            return cls._s3(settings, url.split("://", 1)[1])
        if "://" in url and not url.startswith("file://"):
            raise LakeError(f"unsupported lake url {url!r}: use a path, file://… or s3://bucket/prefix")
        path = url.removeprefix("file://")
        root = os.path.abspath(os.path.expanduser(path))
        return cls(LocalFileSystem(), root, protocol="file", trace_path=settings.trace_path)

    @classmethod
    def _s3(cls, settings: LakeSettings, rest: str) -> Lake:
        root = rest.strip("/")
        if not root:
            raise LakeError("s3 lake url needs a bucket: s3://bucket/prefix")
        region = settings.region or "us-east-1"
        config: dict[str, Any] = {
            # S3-compatible servers (MinIO, SeaweedFS, R2) want path-style URLs and
            # reject the CRC checksums recent botocore sends by default.
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "retries": {"max_attempts": 3, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
        }
        kwargs: dict[str, Any] = {
            "anon": settings.anonymous,
            "use_listings_cache": False,
            "skip_instance_cache": True,
            "config_kwargs": config,
            "client_kwargs": {"region_name": region},
        }
        if settings.endpoint_url:
            kwargs["endpoint_url"] = settings.endpoint_url
        if settings.access_key_id and not settings.anonymous:
            kwargs["key"] = settings.access_key_id
            kwargs["secret"] = settings.secret_access_key
        with _translate("connect", f"s3://{root}"):
            fs = fsspec.filesystem("s3", **kwargs)
        options: dict[str, str] = {"aws_region": region}
        if settings.endpoint_url:
            options["aws_endpoint_url"] = settings.endpoint_url
            if settings.endpoint_url.startswith("http://"):
                options["aws_allow_http"] = "true"
        if settings.anonymous:
            options["aws_skip_signature"] = "true"
        elif settings.access_key_id:
            options["aws_access_key_id"] = settings.access_key_id
            options["aws_secret_access_key"] = settings.secret_access_key
        return cls(
            fs,
            root,
            protocol="s3",
            storage_options=options,
            trace_path=settings.trace_path,
            duckdb_httpfs=settings.duckdb_httpfs,
        )

    # -- naming ---------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def uri(self, path: str) -> str:
        """A path with its protocol, as DuckDB and Polars want it."""
        return path if self.is_local else f"{self.protocol}://{path.lstrip('/')}"

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *(p.strip("/") for p in parts if p)])

    def dataset_root(self, dataset: str) -> str:
        try:
            rel = DATASET_PATHS[dataset]
        except KeyError:
            raise LakeError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_PATHS)}") from None
        return self.join(rel)

    def partition_path(self, dataset: str, hour_start: datetime) -> str:
        """``<dataset root>/year=YYYY/month=MM/day=DD/hour=HH`` for a UTC-aware datetime."""
        if hour_start.tzinfo is None:
            raise ValueError("hour_start must be timezone-aware (UTC)")
        h = hour_start.astimezone(UTC)
        hive = f"year={h.year:04d}/month={h.month:02d}/day={h.day:02d}/hour={h.hour:02d}"
        return f"{self.dataset_root(dataset)}/{hive}"

    # -- I/O ------------------------------------------------------------------------
    def write_atomic(self, path: str, data: bytes | memoryview) -> None:
        """Make ``path`` appear whole with ``data``, or not at all."""
        if self.is_local:
            self._write_local(path, data)
        else:
            with _translate("write", self.uri(path)):
                # One PUT (or one multipart upload, completed at the end): S3 makes
                # the object visible only when the whole body has arrived.
                self.fs.pipe_file(path, bytes(data))

    def write_atomic_with(self, path: str, write: Callable[[str | IO[bytes]], object]) -> int:
        """Like :meth:`write_atomic`, with a writer that serialises straight into the
        target: a temp file path on a local disk (no copy through Python), an
        in-memory buffer uploaded in one PUT on S3. Returns the bytes written."""
        if not self.is_local:
            buf = io.BytesIO()
            with _translate("encode", self.uri(path)):
                write(buf)
            data = buf.getbuffer()
            self.write_atomic(path, data)
            return len(data)
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        try:
            os.makedirs(directory, exist_ok=True)
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._fsync_dir(directory)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise LakeError(f"lake write failed for {path}: {_describe(exc)}") from exc
        return size

    def _write_local(self, path: str, data: bytes | memoryview) -> None:
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._fsync_dir(directory)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise LakeError(f"lake write failed for {path}: {_describe(exc)}") from exc

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        """Persist the rename itself (POSIX); best effort where unsupported."""
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def read_bytes(self, path: str) -> bytes:
        with _translate("read", self.uri(path)):
            data = self.fs.cat_file(path)
        return bytes(data)

    def open(self, path: str, mode: str = "rb") -> Any:
        with _translate("open", self.uri(path)):
            return self.fs.open(path, mode)

    def exists(self, path: str) -> bool:
        with _translate("stat", self.uri(path)):
            return bool(self.fs.exists(path))

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete files; missing ones are ignored."""
        items = [paths] if isinstance(paths, str) else list(paths)
        if not items:
            return
        with _translate("delete", self.uri(items[0]) + (f" (+{len(items) - 1})" if len(items) > 1 else "")):
            if self.is_local:
                for item in items:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item)
            else:
                self.fs.rm(items)

    def _find(self, base: str, detail: bool) -> dict[str, dict[str, Any]]:
        with _translate("list", self.uri(base)):
            self.fs.invalidate_cache(base)
            if not self.fs.exists(base):
                return {}
            found = self.fs.find(base, detail=True, withdirs=False)
        return found if detail else {k: {} for k in found}

    def list_files(self, dataset: str, *, hour: datetime | None = None, temp: bool = False) -> list[str]:
        """The committed ``*.parquet`` files of a dataset (or one hour partition), sorted.

        ``temp=True`` lists leftover temp files instead.
        """
        return sorted(self.file_sizes(dataset, hour=hour, temp=temp))

    def file_sizes(self, dataset: str, *, hour: datetime | None = None, temp: bool = False) -> dict[str, int]:
        base = self.partition_path(dataset, hour) if hour is not None else self.dataset_root(dataset)
        out: dict[str, int] = {}
        for path, info in self._find(base, detail=True).items():
            name = path.rsplit("/", 1)[-1]
            if is_temp_name(name) if temp else name.endswith(PARQUET_SUFFIX) and not name.startswith("."):
                out[path] = int(info.get("size") or 0)
        return out

    def window_files(
        self, dataset: str, start: datetime | None = None, end: datetime | None = None
    ) -> dict[str, int]:
        """The committed files (path → size) of the hour partitions holding ``[start, end)``
        (an open bound: no limit on that side), sorted by path.

        Walks the hive tree and lists only what can hold the window: the root's
        ``year=`` directories, the ``month=`` directories of the window's years, the
        ``day=`` directories of its months, then each day of the window in one recursive
        listing (on S3 one prefix ``LIST``). A month-long lake read for one day costs
        four listings, never a listing of the whole dataset.
        """
        lo = _hour_floor(start) if start is not None else None
        hi = _hour_floor(end - timedelta(microseconds=1)) if end is not None else None
        if lo is not None and hi is not None and hi < lo:
            return {}
        out: dict[str, int] = {}
        days: list[str] = []
        level: list[tuple[str, tuple[int, ...]]] = [(self.dataset_root(dataset), ())]
        for key in ("year", "month", "day"):
            nxt: list[tuple[str, tuple[int, ...]]] = []
            for directory, prefix in level:
                for child, value in self._partition_dirs(directory, key):
                    parts = (*prefix, value)
                    try:
                        first, last = _span(parts)
                    except ValueError:  # not a date (month=13, day=31 in April): no hour of ours
                        continue
                    if (hi is not None and first > hi) or (lo is not None and last < lo):
                        continue
                    nxt.append((child, parts))
            level = nxt
        for directory, _ in level:
            days.append(directory)
            for path, info in self._find(directory, detail=True).items():
                name = path.rsplit("/", 1)[-1]
                if not name.endswith(PARQUET_SUFFIX) or name.startswith("."):
                    continue
                hour = hour_of(path)
                if hour is None or (lo is not None and hour < lo) or (hi is not None and hour > hi):
                    continue
                out[path] = int(info.get("size") or 0)
        self._trace(dataset, days, sorted({p.rsplit("/", 1)[0] for p in out}))
        return dict(sorted(out.items()))

    def _partition_dirs(self, directory: str, key: str) -> list[tuple[str, int]]:
        """``key=NN`` subdirectories of a directory with their values (others ignored)."""
        with _translate("list", self.uri(directory)):
            self.fs.invalidate_cache(directory)
            try:
                entries = self.fs.ls(directory, detail=True)
            except FileNotFoundError:
                return []
        out: list[tuple[str, int]] = []
        for entry in entries:
            name = str(entry["name"]).rstrip("/")
            leaf = name.rsplit("/", 1)[-1]
            if entry.get("type") == "directory" and leaf.startswith(key + "="):
                value = leaf.split("=", 1)[1]
                if value.isdigit():
                    out.append((name, int(value)))
        return sorted(out, key=lambda item: item[1])

    def _trace(self, dataset: str, listed: Sequence[str], read: Sequence[str]) -> None:
        if not self.trace_path:
            return
        lines = [f"list\t{dataset}\t{self.uri(d)}\n" for d in listed]
        lines += [f"read\t{dataset}\t{self.uri(d)}\n" for d in read]
        try:
            with open(self.trace_path, "a", encoding="utf-8") as out:
                out.writelines(lines)
        except OSError as exc:
            log.warning("lake trace %s: %s", self.trace_path, exc)

    def has_files(self, dataset: str) -> bool:
        """Whether a dataset has at least one committed file: a depth-first walk that
        stops at the first one (a few listings on S3, not the whole tree)."""
        base = self.dataset_root(dataset)
        with _translate("list", self.uri(base)):
            self.fs.invalidate_cache(base)
            stack = [base]
            while stack:
                try:
                    entries = self.fs.ls(stack.pop(), detail=True)
                except FileNotFoundError:
                    continue
                dirs: list[str] = []
                for entry in entries:
                    name = str(entry["name"]).rstrip("/")
                    leaf = name.rsplit("/", 1)[-1]
                    if entry.get("type") == "directory":
                        dirs.append(name)
                    elif leaf.endswith(PARQUET_SUFFIX) and not leaf.startswith("."):
                        return True
                stack.extend(sorted(dirs, reverse=True))
        return False

    def modified_at(self, path: str) -> float:
        """Modification time of a file (epoch seconds); 0 when the filesystem does not say."""
        with _translate("stat", self.uri(path)):
            info = self.fs.info(path)
        value = info.get("mtime", info.get("LastModified", info.get("created")))
        if isinstance(value, datetime):
            return value.timestamp()
        return float(value or 0.0)

    def ping(self) -> None:
        """Check the lake is reachable (and, locally, writable); raise LakeError if not."""
        started = time.monotonic()
        if self.is_local:
            with _translate("ping", self.root):
                os.makedirs(self.root, exist_ok=True)
                if not os.access(self.root, os.W_OK):
                    raise PermissionError(f"{self.root} is not writable")
            return
        bucket = self.root.split("/", 1)[0]
        with _translate("ping", f"s3://{bucket}"):
            self.fs.invalidate_cache(bucket)
            self.fs.ls(bucket, detail=False)
        log.debug("lake ping %s in %.3fs", self.uri(self.root), time.monotonic() - started)

    def __repr__(self) -> str:
        return f"Lake({self.uri(self.root)!r})"
