"""The notebooks run top to bottom on a short demo's lake.

One ``arbflow demo`` (a subprocess with its own data dir, lake and private Redis) writes
a lake; then every ``notebooks/*.ipynb`` is executed with nbclient, the lake passed the way
the notebooks read it (``ARBFLOW_LAKE__URL``, through ``core.settings``). Each must run
without an error and show what it is for: tables with rows, and charts (matplotlib figures,
shown inline as PNG; headless, ``MPLBACKEND=Agg`` and a matplotlib config dir of the test's own).
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient
from PIL import Image
from traitlets import default

from tests.support.cli import run_demo

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

# What each notebook must show at least on a 20 s demo's lake: tables, of them with rows,
# charts, of them with data drawn. The sure ones: quotes (01's spreads across exchanges) and
# funding rates (02's funding spreads), the funnel and the fan-out rows of 20 users (03); a
# 20 s run may close no opportunity or send no push.
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
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("notebooks-demo")
    proc = run_demo(base, redis_url="", duration_s=20, users=20, label="notebooks-test", timeout_s=150)
    assert proc.returncode == 0, (
        f"demo failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return base / "lake"


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


@pytest.mark.timeout(260)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_on_demo_lake(
    name: str, demo_lake: Path, mpl_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBFLOW_LAKE__URL", str(demo_lake))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless; the notebooks' %matplotlib inline renders with Agg
    monkeypatch.setenv("MPLCONFIGDIR", str(mpl_config))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
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
