"""The committed notebooks carry no outputs: they are run on a lake, never stored run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[3] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"01_market_data", "02_opportunities", "03_distribution"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook with code"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs"
        assert cell.execution_count is None, f"code cell {i} has an execution count"
    for i, cell in enumerate(nb.cells):
        assert "attachments" not in cell or not cell.attachments, f"cell {i} has attachments"
        assert not {"execution", "collapsed", "scrolled"} & set(cell.metadata), f"cell {i}: run metadata"
    assert "widgets" not in nb.metadata
