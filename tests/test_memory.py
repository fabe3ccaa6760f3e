"""The memory-lean paths give what the plain ones gave: Space iteration in chunks,
Space.table from numpy columns, text decoded once per distinct value."""

from __future__ import annotations

import numpy as np
import pandas as pd

import notebookscan as ns
from notebookscan import space as space_module


def test_iteration_in_chunks_gives_every_point_once_in_order():
    space = ns.grid(a=np.linspace(0, 1, 101), b=range(97), c=["x", "yz"])
    assert len(space) > 3 * space_module._ITER_ROWS
    points = list(space)
    cols = space.columns()
    assert len(points) == len(space)
    for name in space.names:
        assert [p[name] for p in points] == cols[name]
    assert all(type(p["b"]) is int and type(p["a"]) is float for p in points[:5])
    kept = space.where(lambda p: p["b"] % 3 == 0 and p["c"] == "yz")
    assert len(kept) == 101 * 33
    assert all(p["b"] % 3 == 0 and p["c"] == "yz" for p in kept)


def test_table_has_the_dtypes_and_values_of_the_points():
    space = (ns.grid(k=[1, 2], tau=[0.5, 1.5], on=[True, False], name=["α", "b"])
             + ns.points([{"k": 2.5, "tau": 0.5, "on": True, "name": "c"}]))
    table = space.table()
    expected = pd.DataFrame({**space.columns(), "key": space.keys()})
    pd.testing.assert_frame_equal(table, expected)
    table.loc[0, "tau"] = -1.0  # a copy: the space's cached columns stay as they were
    assert space.column_arrays()["tau"][0] == 0.5


def test_text_bookkeeping_reads_back_shared_and_equal(tmp_path):
    store = str(tmp_path / "s")

    def fn(x):
        if x == 3:
            raise ValueError("bäd ✓")
        return float(x)

    ns.Scan(fn, ns.grid(x=range(6)), store=store).run(executor="serial", progress=False)
    ds = ns.open_store(store)
    status = ds.ns_status.values
    assert status.dtype == object
    assert status.tolist() == ["done"] * 3 + ["failed"] + ["done"] * 2
    assert status[0] is status[1]  # one str per distinct value, not one per point
    assert "bäd ✓" in ds.ns_error.values[3]
    assert len(set(ds.ns_key.values.tolist())) == 6
