"""The notebooks run top to bottom on a short demo's lake, and read only their window.

One ``arbflow demo`` (the session's ``demo_run``, a subprocess with its own data dir and
lake, shared with test_demo) writes a lake; copies of its files in the hours of two earlier
days and a corrupt file in the day before and the day after the demo's make it a lake of
several days. Every ``notebooks/*.ipynb`` is executed with nbclient, its parameters cell
replaced (the lake URL, the window: the demo's hours). Each must run without an error and
show what it is for: tables with rows, and charts (matplotlib figures, shown inline as PNG;
headless, ``MPLBACKEND=Agg`` and a matplotlib config dir of the test's own). The lake's read trace
(``ARBFLOW_LAKE__TRACE_PATH``) must show only the window's days listed and hours read; the
corrupt files would fail any reader that opened them.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient
from PIL import Image
from traitlets import default

from core.settings import LakeSettings
from pipeline.lake import Lake, hour_of
from pipeline.schemas import DATASET_PATHS
from pipeline.versions import REGISTRY
from tests.support.lake_versions import rows, write_file

pytestmark = pytest.mark.xdist_group("demo")  # one worker runs the demo and reads its lake

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

# What each notebook must show at least on a 25 s demo's lake: tables, of them with rows,
# charts, of them with data drawn. The sure ones: quotes (01's spreads across exchanges) and
# funding rates (02's funding spreads), the funnel and the fan-out rows of 20 users (03); a
# short run may close no opportunity or send no push.
EXPECTED = {
    "01_market_data": {"tables": 4, "with_rows": 4, "charts": 2, "with_data": 2},
    "02_opportunities": {"tables": 6, "with_rows": 2, "charts": 5, "with_data": 2},
    "03_distribution": {"tables": 8, "with_rows": 5, "charts": 6, "with_data": 3},
}


def _ipc_kernel_manager(socket_dir: Path) -> type[KernelManager]:
    """Kernels on IPC sockets under ``socket_dir``: no loopback ports, no unencrypted-TCP notice."""

    class IpcKernelManager(KernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:
            return str(socket_dir / "kernel")

    return IpcKernelManager


@pytest.fixture(scope="module")
def demo_lake(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> Path:
    """The lake of the session's demo run (conftest.py; test_demo checks its report)."""
    proc, base = demo_run
    assert proc.returncode == 0, (
        f"demo failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return base / "lake"


def _hive(path: Path) -> str:
    return "/".join(p for p in path.parts if p.split("=")[0] in ("year", "month", "day", "hour"))


def _moved(lake: Path, path: Path, hour: datetime) -> Path:
    """``path`` with its hour partition replaced by ``hour``'s."""
    hive = f"year={hour.year:04d}/month={hour.month:02d}/day={hour.day:02d}/hour={hour.hour:02d}"
    rel = str(path.relative_to(lake)).replace(_hive(path), hive)
    return lake / rel


@pytest.fixture(scope="module")
def days_lake(demo_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime, datetime]:
    """The demo's lake plus its files copied two and three days earlier, and a corrupt file a day
    before and a day after; returns the lake and the window holding the demo's hours."""
    lake = tmp_path_factory.mktemp("notebooks-days") / "lake"
    shutil.copytree(demo_lake, lake)
    files = sorted(p for p in lake.rglob("*.parquet") if hour_of(str(p)) is not None)
    hours = sorted({hour_of(str(p)) for p in files} - {None})
    assert hours, "the demo wrote no partition"
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    for path in files:
        hour = hour_of(str(path))
        assert hour is not None
        for days in (2, 3):
            target = _moved(lake, path, hour - timedelta(days=days))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        for days in (-1, 1):
            target = _moved(lake, path, hour + timedelta(days=days)).with_name("part-0-corrupt.parquet")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"not parquet: a reader outside the window opened this")
    return lake, start, end


def _parameters(nb: nbformat.NotebookNode, **values: object) -> None:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert nb.cells.index(cell) == 1, "the parameters cell opens the notebook"
    names = [line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line]
    assert set(values) <= set(names), names
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())


def _check_trace(trace: Path, start: datetime, end: datetime) -> None:
    lines = [line.split("\t") for line in trace.read_text().splitlines()]
    assert any(kind == "read" and dataset == "quotes" for kind, dataset, _ in lines), lines[:5]
    days = set()
    at = start
    while at < end:
        days.add((at.year, at.month, at.day))
        at += timedelta(hours=1)
    for kind, dataset, where in lines:
        if kind == "list":
            parts = dict(
                p.split("=") for p in where.split("/") if p.split("=")[0] in ("year", "month", "day")
            )
            assert (int(parts["year"]), int(parts["month"]), int(parts["day"])) in days, (dataset, where)
        else:
            hour = hour_of(where + "/")
            assert hour is not None and start <= hour < end, (dataset, where)


def _outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    return [
        out["data"][mime]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if mime in out.get("data", {})
    ]


def _drawn(png: str) -> bool:
    """A chart with data: lines, markers or bars in colour. Empty axes, their text, ticks and grid,
    and the "no data" note are black, white or grey; a zero-height bar draws nothing."""
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"), dtype=np.int16)
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 60
    return int(coloured.sum()) >= 50


def _table_rows(html: str) -> int:
    """Rows of a Polars DataFrame's HTML repr (its ``shape: (rows, cols)`` caption)."""
    shape = html.split("shape: (", 1)[1].split(")", 1)[0]
    return int(shape.split(",")[0])


@pytest.fixture(scope="module")
def mpl_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A matplotlib config and cache dir of the test's own, its font cache built up front: a kernel
    that built it would log "building the font cache" to stderr."""
    config = tmp_path_factory.mktemp("matplotlib")
    env = {**os.environ, "MPLCONFIGDIR": str(config), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return config


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_on_its_window_of_a_lake_of_several_days(
    name: str,
    days_lake: tuple[Path, datetime, datetime],
    mpl_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake, start, end = days_lake
    trace = tmp_path / "reads.tsv"
    monkeypatch.setenv("ARBFLOW_LAKE__URL", "/nonexistent")  # the parameters cell names the lake
    monkeypatch.setenv("ARBFLOW_LAKE__TRACE_PATH", str(trace))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless; the notebooks' %matplotlib inline renders with Agg
    monkeypatch.setenv("MPLCONFIGDIR", str(mpl_config))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    _parameters(nb, LAKE_URL=str(lake), START=start.isoformat(), END=end.isoformat())
    client = NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        kernel_manager_class=_ipc_kernel_manager(tmp_path),
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    stderr = [o.text for c in code for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"the notebook printed to stderr (a warning?): {stderr}"
    expected = EXPECTED[name]
    tables = _outputs(nb, "text/html")
    assert len(tables) >= expected["tables"], f"{len(tables)} tables"
    assert sum(_table_rows(t) > 0 for t in tables) >= expected["with_rows"], [t[:300] for t in tables]
    charts = _outputs(nb, "image/png")
    assert len(charts) >= expected["charts"], f"{len(charts)} charts"
    drawn = [_drawn(c) for c in charts]
    assert sum(drawn) >= expected["with_data"], f"charts with data drawn: {drawn}"
    if name == "02_opportunities":
        # edges of pushable opportunities per kind, each in its unit; flagged ones apart, by flag
        heads = ("<th>unit</th>", "<th>flagged</th>", "<th>mean_net</th>")
        assert any(all(h in t for h in heads) for t in tables)
        assert any("<th>flag</th>" in t for t in tables)
        assert any("net_apr_pct_last" in t and "over_hours" in t for t in tables)
    _check_trace(trace, start, end)
    assert start.tzinfo is UTC or start.utcoffset() == timedelta(0)


@pytest.mark.timeout(260)
def test_the_opportunities_notebook_aggregates_pushable_edges_per_kind(
    mpl_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """02 on a small lake (no demo): a 300,000 bps ticker collision is counted apart, by
    flag, and is in no edge figure; funding is shown in % APR with the horizon of its total."""
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from pipeline.schemas import FUNDING_RATES
    from tests.unit.pipeline.test_analytics import sample_rows, write_rows

    now = datetime.now(UTC)
    tables = sample_rows(now)
    tables["funding_rates"] = pa.Table.from_pylist(
        [
            {
                "ts": now - timedelta(minutes=m),
                "recv_ts": now - timedelta(minutes=m),
                "exchange": exchange,
                "symbol": "BTC/USDT:USDT",
                "funding_rate": rate * 8,
                "interval_hours": 8.0,
                "rate_per_hour": rate,
            }
            for m in range(5)
            for exchange, rate in (("binance", 1e-5), ("okx", 3e-5 + m * 1e-6))
        ],
        schema=FUNDING_RATES,
    )
    write_rows(tmp_path / "lake", tables)
    monkeypatch.setenv("ARBFLOW_LAKE__URL", str(tmp_path / "lake"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MPLCONFIGDIR", str(mpl_config))
    nb = nbformat.read(NOTEBOOKS / "02_opportunities.ipynb", as_version=4)
    NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        kernel_manager_class=_ipc_kernel_manager(tmp_path),
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    tables_html = _outputs(nb, "text/html")
    by_kind = next(t for t in tables_html if "<th>mean_net</th>" in t)
    assert "net bps (instant)" in by_kind and "net % APR" in by_kind
    assert "300000" not in by_kind and "300,000" not in by_kind
    flagged = next(t for t in tables_html if "<th>flag</th>" in t)
    assert "implausible_spread" in flagged and "low_confidence" in flagged
    funding = next(t for t in tables_html if "net_apr_pct_last" in t)
    # the pair's last event: a row of an earlier release, its APR from 10 bps over the default 168 h
    assert "<th>over_hours</th>" in funding and "<td>5.21</td>" in funding and "<td>168.0</td>" in funding


SYNTH_DAY = datetime(2025, 5, 14, tzinfo=UTC)


@pytest.fixture(scope="module")
def synthetic_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four days of every dataset (rows every minute of hours 00, 06, 12 and 18 of each day,
    by hand, no demo and no Ray) and a corrupt file in hour 13 of every day but the third."""
    root = tmp_path_factory.mktemp("notebooks-synthetic") / "lake"
    lake = Lake.from_settings(LakeSettings(url=str(root)))
    for name in DATASET_PATHS:
        schema = REGISTRY[name].schema
        for day in range(4):
            for hour in (0, 6, 12, 18):
                at = SYNTH_DAY + timedelta(days=day, hours=hour)
                write_file(lake, name, rows(schema, 30, at, tag=f"d{day}"), at)
            if day != 2:
                bad = lake.partition_path(name, SYNTH_DAY + timedelta(days=day, hours=13))
                Path(bad).mkdir(parents=True, exist_ok=True)
                (Path(bad) / "part-0-corrupt.parquet").write_bytes(b"not parquet")
    return root


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_reads_only_its_window(
    name: str, synthetic_lake: Path, mpl_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third day's 10:00-19:00 of a four-day lake: every cell runs and only that window's
    day is listed and its hours 12 and 18 read (a read of any other day's hour 13 would fail)."""
    start, end = SYNTH_DAY + timedelta(days=2, hours=10), SYNTH_DAY + timedelta(days=2, hours=19)
    trace = tmp_path / "reads.tsv"
    monkeypatch.setenv("ARBFLOW_LAKE__URL", "/nonexistent")  # the parameters cell names the lake
    monkeypatch.setenv("ARBFLOW_LAKE__TRACE_PATH", str(trace))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MPLCONFIGDIR", str(mpl_config))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    _parameters(nb, LAKE_URL=str(synthetic_lake), START=start.isoformat(), END=end.isoformat())
    client = NotebookClient(
        nb,
        timeout=90,
        kernel_name="python3",
        kernel_manager_class=_ipc_kernel_manager(tmp_path),
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    _check_trace(trace, start, end)
    read = {(d, hour_of(w + "/")) for k, d, w in (line.split("\t") for line in trace.read_text().splitlines())
            if k == "read"}  # fmt: skip
    assert {h for d, h in read if d == "quotes"} <= {start + timedelta(hours=2), start + timedelta(hours=8)}
