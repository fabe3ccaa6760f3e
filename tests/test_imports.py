"""The core imports no widget, plotting or cluster library, and runs without them."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_works_with_widgets_plotting_and_ipyparallel_unavailable(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for name in ("ipywidgets", "matplotlib", "ipyparallel", "IPython.display"):
            sys.modules[name] = None          # any import of them now fails
        import notebookscan as ns
        scan = ns.Scan(lambda x: x * 2, ns.grid(x=[1, 2]), store={str(tmp_path / "s")!r})
        scan.run(executor="serial", progress=False)
        assert scan.results().result.values.tolist() == [2, 4]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


HEAVY = ("ipyparallel", "matplotlib", "ipywidgets", "dask", "scipy", "cloudpickle")


def _loaded_after(code):
    """The top-level packages among HEAVY (and xarray, netCDF4) that ``code`` imports in a
    fresh interpreter."""
    names = (*HEAVY, "xarray", "netCDF4", "numpy")
    probe = (textwrap.dedent(code) + "\nimport sys\n"
             f"print(','.join(n for n in {names!r} if n in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(filter(None, out.stdout.strip().split(",")))


def test_import_notebookscan_imports_no_heavy_library():
    # the public names resolve on first use (module __getattr__), not at import
    assert _loaded_after("import notebookscan") == set()


def test_public_names_resolve_and_are_listed():
    import notebookscan as ns

    for name in ns.__all__:
        assert getattr(ns, name) is not None, name
        assert name in dir(ns), name
    assert ns.DryRun is ns.Plan
    assert ns.store.open_store is ns.open_store  # submodules resolve as attributes
    assert not hasattr(ns, "no_such_name")


def test_opening_a_store_imports_no_dask_scipy_or_widgets(tmp_path):
    path = str(tmp_path / "s")
    import notebookscan as ns

    ns.Scan(lambda x, y: x * 0.5, ns.grid(x=[1, 2, 3], y=["a", "bc"]), store=path).run(
        executor="serial", progress=False)
    loaded = _loaded_after(f"""
        import notebookscan as ns
        ds = ns.open_store({path!r})
        assert ds.result.shape == (3, 2) and ds.y.dtype.kind == "U", ds
        ns.Scan, ns.grid, ns.Store  # the scan API resolves without them too
    """)
    assert loaded.isdisjoint(HEAVY), loaded
    assert {"xarray", "netCDF4"} <= loaded


def test_a_lazy_open_after_an_eager_one_still_sees_dask_arrays(tmp_path):
    # xarray is told dask is absent only until dask.array is imported
    path = str(tmp_path / "s")
    code = textwrap.dedent(f"""
        import notebookscan as ns
        ns.Scan(lambda x: x * 0.5, ns.grid(x=[1, 2, 3]), store={path!r}).run(
            executor="serial", progress=False)
        eager = ns.open_store({path!r})
        lazy = ns.open_store({path!r}, lazy=True)
        import dask.array as da
        assert isinstance(lazy.result.data, da.Array), type(lazy.result.data)
        assert lazy.result.chunks is not None
        assert (lazy.result.load().values == eager.result.values).all()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
