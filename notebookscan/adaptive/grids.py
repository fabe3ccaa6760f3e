"""An adaptive scan's points (a ``point`` Dataset) on a grid, for plotting and errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ScanError

__all__ = ["line", "on_grid"]


def _done(ds: Any, var: str, select: dict[str, Any]) -> Any:
    """The done points of ``ds`` with a finite ``var``, in the grid cell ``select``."""
    if var not in ds:
        raise ScanError(f"no result {var!r} in the dataset; it holds {sorted(ds.data_vars)}")
    keep = np.isfinite(ds[var].values.astype(float))
    if "ns_status" in ds:
        keep &= ds["ns_status"].values.astype(str) == "done"
    for name, value in select.items():
        if name not in ds.coords and name not in ds:
            raise ScanError(f"{name!r} is no parameter of the dataset")
        keep &= ds[name].values == value
    return ds.isel(point=np.flatnonzero(keep))


def line(ds: Any, var: str, x: str, **select: Any) -> Any:
    """``var`` as a 1-D DataArray over ``x``, sorted (a line plot's data).

    ``select`` picks one grid cell of a mixed scan (``kind="a"``).
    """
    import xarray as xr

    part = _done(ds, var, select)
    xs = part[x].values.astype(float)
    order = np.argsort(xs, kind="stable")
    return xr.DataArray(part[var].values[order], dims=(x,), coords={x: xs[order]}, name=var,
                        attrs=dict(ds[var].attrs))


def on_grid(ds: Any, var: str, x: str, y: str, n: int = 100, **select: Any) -> Any:
    """``var`` linearly interpolated on the Delaunay triangulation of the points onto
    an ``n`` × ``n`` grid over their range (NaN outside their hull), as a DataArray over
    ``(y, x)``."""
    import xarray as xr
    from scipy.interpolate import LinearNDInterpolator

    part = _done(ds, var, select)
    pts = np.column_stack([part[x].values.astype(float), part[y].values.astype(float)])
    if len(pts) < 3:
        raise ScanError(f"on_grid needs at least 3 done points, the dataset has {len(pts)}")
    xs = np.linspace(pts[:, 0].min(), pts[:, 0].max(), n)
    ys = np.linspace(pts[:, 1].min(), pts[:, 1].max(), n)
    interpolate = LinearNDInterpolator(pts, part[var].values.astype(float))
    gx, gy = np.meshgrid(xs, ys)
    return xr.DataArray(interpolate(gx, gy), dims=(y, x), coords={y: ys, x: xs}, name=var,
                        attrs=dict(ds[var].attrs))
