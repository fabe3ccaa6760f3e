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
