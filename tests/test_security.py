"""A store holds data only: reading someone else's store never executes code."""

from __future__ import annotations

import os
import pickle

import netCDF4
import numpy as np

import notebookscan as ns


class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(store, marker):
    """Plant pickles where a careless reader might look: in a shard variable, an attribute,
    a file named like a shard, and the metadata."""
    payload = pickle.dumps(_Payload(str(marker)))
    shards = os.path.join(store, "shards")
    with netCDF4.Dataset(os.path.join(shards, "mallory.host.1.0.aaaaaaaa.nc"), "w") as nc:
        nc.createDimension("point", 1)
        key = nc.createVariable("key", str, ("point",))
        key[0] = "0" * 20
        status = nc.createVariable("status", str, ("point",))
        status[0] = "done"
        nc.setncattr("provenance", "{not json")
    with netCDF4.Dataset(os.path.join(shards, "mallory.host.2.0.bbbbbbbb.nc"), "w") as nc:
        nc.createDimension("point", 1)
        nc.createDimension("n", len(payload))
        nc.setncattr("provenance", payload.decode("latin-1"))
        var = nc.createVariable("x", "u1", ("point", "n"))
        var[0, :] = np.frombuffer(payload, dtype=np.uint8)
        var.setncattr("notebookscan_role", "result")
    with open(os.path.join(shards, "mallory.host.3.0.cccccccc.nc"), "wb") as f:
        f.write(payload)
    with open(os.path.join(store, "payload.pkl"), "wb") as f:
        f.write(payload)


def test_planted_pickles_are_never_executed(tmp_path):
    store = tmp_path / "store"
    ns.Scan(lambda x: x, ns.grid(x=[1, 2]), store=store).run(executor="serial", progress=False)
    marker = tmp_path / "pwned"
    _plant(store, marker)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ns.StoreWarning)
        ds = ns.open_store(store)
        ns.open_store(store, lazy=True)
        ns.verify(store)
        ns.merge(store, tmp_path / "copy")
        ns.open_store(tmp_path / "copy")
        ns.compact(tmp_path / "copy")
    assert not marker.exists()
    assert ds.result.sel(x=2).item() == 2
