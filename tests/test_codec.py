"""Each big result variable's codec is chosen from a sample: noise is stored plain (no
"Blosc_Filter Error" on the process's stderr, no shard written twice), data that shrinks
is compressed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import netCDF4
import numpy as np

import notebookscan as ns
from notebookscan.store import Store

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import notebookscan as ns

    def model(k: int):
        rng = np.random.default_rng(k)
        return {"noise_int": rng.integers(-2**62, 2**62, 4096),  # blosc cannot shrink it
                "noise": rng.random((100, 125)),
                "smooth": np.sin(np.linspace(0, k + 1, 8192)),
                "small": np.arange(8) * k}

    if __name__ == "__main__":
        ns.Scan(model, ns.grid(k=range(40)), store=sys.argv[1]).run(
            executor=sys.argv[2], progress=False)
""")


def _filters(store_path) -> dict[str, dict]:
    store = Store(store_path)
    out: dict[str, dict] = {}
    for name in store.shard_files():
        with netCDF4.Dataset(os.path.join(store.shards_dir, name)) as nc:
            for var in ("noise_int", "noise", "smooth"):
                out.setdefault(var, nc.variables[var].filters())
    return out


def test_random_arrays_print_nothing_on_stderr_and_smooth_ones_are_compressed(tmp_path):
    script = tmp_path / "scan.py"
    script.write_text(SCRIPT)
    for executor in ("serial", "processes"):
        store = tmp_path / executor
        env = {**os.environ, "NOTEBOOKSCAN_WORKERS": "2"}
        proc = subprocess.run([sys.executable, str(script), str(store), executor],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # the real fd 2 of the scan and of its pool workers: netCDF-C prints there
        assert proc.stderr == "", proc.stderr[-3000:]
        assert not any(n.startswith(".tmp-plain-") for n in os.listdir(store / "shards"))
        filters = _filters(store)
        assert not filters["noise_int"].get("blosc"), filters
        assert not filters["noise"].get("blosc"), filters
        assert filters["smooth"].get("blosc"), filters
        ds = ns.open_store(store)
        rng = np.random.default_rng(7)
        np.testing.assert_array_equal(ds.noise_int.sel(k=7).values,
                                      rng.integers(-2**62, 2**62, 4096))
        np.testing.assert_array_equal(ds.smooth.sel(k=7).values,
                                      np.sin(np.linspace(0, 8, 8192)))


def _big_model(k: int):
    rng = np.random.default_rng(k)
    if k == 2:
        raise ValueError("k=2 fails")
    rows = 1000 if k != 3 else 950  # point 3's array is shorter: padded as missing
    return {"x": rng.random((rows, 125)),  # 1 MB of noise a point: plain, contiguous
            "n": rng.integers(0, 2**40, (rows, 20))}


def _bytes_written() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar"))


def test_plain_big_results_are_contiguous_written_once_and_missing_rows_read_missing(
        tmp_path):
    """A plain (uncompressed) big result is one contiguous block without HDF5's fill
    pass: each row is written once, a failed point's row and a short row's padding
    as missing values, never as whatever the file held."""
    path = tmp_path / "store"
    before = _bytes_written()
    ns.Scan(_big_model, ns.grid(k=range(6)), store=path).run(executor="serial",
                                                              progress=False)
    written = _bytes_written() - before
    data_bytes = 6 * 1000 * (125 * 8 + 20 * 8)
    assert written < 1.5 * data_bytes, f"{written / 1e6:.1f} MB written for {data_bytes / 1e6} MB"
    store = Store(path)
    for name in store.shard_files():
        with netCDF4.Dataset(os.path.join(store.shards_dir, name)) as nc:
            assert nc.variables["x"].chunking() == "contiguous"
    ds = ns.open_store(path)
    x, n = ds["x"].values, ds["n"]
    assert np.isnan(x[2]).all()  # the failed point
    assert np.isnan(x[3, 950:]).all() and not np.isnan(x[3, :950]).any()
    for k in (0, 1, 4, 5):
        np.testing.assert_array_equal(x[k], np.random.default_rng(k).random((1000, 125)))
    # integers: a failed point and the padding read as missing, never as 0
    assert n.isnull()[2].all() and n.isnull()[3, 950:].all()
    assert not n.isnull()[3, :950].any() and not n.isnull()[0].any()
