"""Benchmark: cold start of ``arbflow run`` — seconds from the command to the first answered update.

A Telegram sandbox runs in this process; a user's ``/start`` is waiting in it before the
command starts (as when a bot restarts while people write to it). ``arbflow run`` (the
sim source, its own ``redis-server`` and local Ray under a temporary data dir) is
started as a subprocess, and the figure is the time from its start until the bot's first
message reaches that chat. Then it gets SIGTERM and the stop time is reported too.

- polling mode (no public URL): updates by ``getUpdates``, no Serve on the answer's path;
- webhook mode (``--webhook``, not in ``--quick``): the sandbox posts to the Serve app.

Baseline, measured in the same run: a bare local Ray with an empty Ray Serve app, from
``ray.init`` until ``/healthz`` answers (the floor of an answer that waits for Serve, as
the demo's did). ``ratio = baseline_s / first_answer_s`` (above 1: we answer before a
bare Serve could).

    uv run python bench/startup.py [--quick] [--webhook]

Last line: ``{"bench": "startup", "first_answer_s": ..., "baseline_s": ..., "ratio": ...,
"target": "...", "ok": ...}``; ``ok`` when the first answer came within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.runtime import free_port  # noqa: E402
from serve.standins.sandbox import start_sandbox  # noqa: E402

TARGET = "first answered update <= 10 s after `arbflow run` starts"
TARGET_S = 10.0
USER = 4242

BASELINE = """
import time, sys
t0 = time.monotonic()
import ray, httpx
from ray import serve
from fastapi import FastAPI
ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
api = FastAPI()
@serve.deployment
@serve.ingress(api)
class Empty:
    @api.get("/healthz")
    def healthz(self):
        return {"ok": True}
port = int(sys.argv[1])
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(Empty.bind(), name="empty", route_prefix="/")
while True:
    try:
        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.05)
print(round(time.monotonic() - t0, 3))
ray.shutdown()
"""


class Sandbox:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle = self.call(start_sandbox(port=0))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def user_writes(self, uid: int, text: str) -> None:
        async def send() -> None:
            sb = self.handle.sandbox
            bot = sb.bot()
            user = sb.add_user(uid, "Bench")
            sb.emit(bot, {"message": sb.user_message(bot, user, sb.chat(uid), text)})

        self.call(send())

    def answered(self, uid: int) -> bool:
        async def read() -> bool:
            log = self.handle.sandbox.bot().chats.get(uid)
            return log is not None and any(e.from_bot for e in log.entries.values())

        return bool(self.call(read()))

    def stop(self) -> None:
        self.call(self.handle.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def first_answer(sandbox: Sandbox, *, webhook: bool, timeout_s: float) -> dict[str, Any]:
    """Start ``arbflow run``, time the first answer in the waiting chat, stop it."""
    uid = USER + (1 if webhook else 0)
    sandbox.user_writes(uid, "/start")
    with tempfile.TemporaryDirectory(prefix="arbflow-bench-startup-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "ARBFLOW_DATA_DIR": f"{tmp}/var",
            "ARBFLOW_LAKE__URL": f"{tmp}/lake",
            "ARBFLOW_REDIS__URL": "",
            "ARBFLOW_HTTP__PORT": str(port),
            "ARBFLOW_RAY__NAMESPACE": f"bench-startup-{uuid.uuid4().hex[:6]}",
            "ARBFLOW_TELEGRAM__TOKEN": sandbox.handle.token,
            "ARBFLOW_TELEGRAM__API_BASE": sandbox.handle.base_url,
            "ARBFLOW_TELEGRAM__PUBLIC_URL": f"http://127.0.0.1:{port}" if webhook else "",
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        }
        env.pop("ARBFLOW_RAY__ADDRESS", None)
        log_path = Path(tmp) / "run.log"
        with log_path.open("wb") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "serve.cli", "run", "--source", "sim"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            answer_s: float | None = None
            while time.monotonic() - t0 < timeout_s and proc.poll() is None:
                if sandbox.answered(uid):
                    answer_s = time.monotonic() - t0
                    break
                time.sleep(0.05)
            t1 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stop_s = time.monotonic() - t1
        out = log_path.read_text(errors="replace")
        started = next((ln.strip() for ln in out.splitlines() if ln.strip().startswith("started")), "")
    return {
        "first_answer_s": None if answer_s is None else round(answer_s, 2),
        "stop_s": round(stop_s, 2),
        "exit": proc.returncode,
        "started": started,
        "tail": "" if answer_s is not None else out[-1500:],
    }


def baseline(timeout_s: float) -> float | None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BASELINE, str(free_port())],
            cwd=ROOT,
            env={**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        print(f"baseline: no answer within {timeout_s:.0f} s", file=sys.stderr)
        return None
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(proc.stderr[-1500:], file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="polling mode and the baseline only")
    parser.add_argument("--webhook", action="store_true", help="also measure webhook mode")
    args = parser.parse_args()
    sandbox = Sandbox()
    try:
        polling = first_answer(sandbox, webhook=False, timeout_s=40 if args.quick else 120)
        print(
            f"arbflow run, polling: first answer after {polling['first_answer_s']} s, "
            f"stopped in {polling['stop_s']} s (exit {polling['exit']})"
        )
        if polling["started"]:
            print(f"  {polling['started']}")
        if polling["tail"]:
            print(polling["tail"])
        webhook = None
        if args.webhook and not args.quick:
            webhook = first_answer(sandbox, webhook=True, timeout_s=120)
            print(
                f"arbflow run, webhook: first answer after {webhook['first_answer_s']} s, "
                f"stopped in {webhook['stop_s']} s"
            )
            if webhook["started"]:
                print(f"  {webhook['started']}")
    finally:
        sandbox.stop()
    base = baseline(60 if args.quick else 180)
    print(f"baseline: bare Ray + empty Serve app answering /healthz after {base} s")
    seconds = polling["first_answer_s"]
    result: dict[str, Any] = {
        "bench": "startup",
        "first_answer_s": seconds,
        "stop_s": polling["stop_s"],
        "baseline_s": base,
        "ratio": round(base / seconds, 2) if base and seconds else None,
        "target": TARGET,
        "ok": seconds is not None and seconds <= TARGET_S,
    }
    if webhook is not None:
        result["webhook_first_answer_s"] = webhook["first_answer_s"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
