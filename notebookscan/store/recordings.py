"""Read a segmented store's recordings back as one continuous time axis per point.

The recordings store (``<store>/segments``) holds one row per point, link and segment.
:func:`open_recordings` joins each point's segments along every recording's first
dimension (its time axis, or ``spike`` for events), stacks per-segment summaries along
``segment``, and lays the points out like ``scan.results()`` (one dimension per grid
parameter, or ``point``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ..errors import StoreError, StoreWarning
from .dataset import decode_result, to_dataset
from .directory import Store
from .schema import SEGMENT_PARAMETERS as SEGMENT_NAMES
from .schema import SEGMENT_ROLE_ATTR as ROLE_ATTR
from .schema import Layout
from .table import Table

__all__ = ["open_recordings"]


def _row_slice(data: np.ndarray, row: int, lengths: list[int]) -> np.ndarray:
    return np.asarray(data[(row, *(slice(0, n) for n in lengths))])


def _coord_slice(coords: dict[str, np.ndarray], dim: str, row: int, n: int) -> np.ndarray | None:
    coord = coords.get(dim)
    if coord is None:
        return None
    return (coord[:n] if coord.ndim == 1 else coord[row, :n]).astype(np.float64)


def _stack(blocks: list[np.ndarray], fill_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Pad per-point blocks to a common shape; return (stacked, first-dim lengths)."""
    ndim = max(b.ndim for b in blocks)
    shape = tuple(max(b.shape[i] for b in blocks) for i in range(ndim))
    ragged = any(b.shape != shape for b in blocks)
    dtype = fill_dtype
    if ragged and dtype.kind in "iub":
        dtype = np.dtype(np.float64)
    fill: Any = np.nan if dtype.kind == "f" else ("" if dtype.kind in "OU" else 0)
    out = np.full((len(blocks), *shape), fill, dtype=dtype)
    for i, block in enumerate(blocks):
        out[(i, *(slice(0, n) for n in block.shape))] = block
    return out, np.array([b.shape[0] if b.ndim else 1 for b in blocks], dtype=np.int64)


def open_recordings(path: str | os.PathLike[str], *, link: int | None = None,
                    variables: list[str] | None = None) -> Any:
    """Open the recordings of a segmented store as a labelled :class:`xarray.Dataset`.

    Parameters
    ----------
    path
        The store directory (the one given to ``SegmentedScan``).
    link
        Only this run of a chain. ``None``: every link, along a ``link`` dimension when
        the store has more than one.
    variables
        Only these recordings / summaries (default: all).

    Returns
    -------
    xarray.Dataset
        Recordings with dims ``(<parameters or point>[, link], time, ...)``: each
        point's segments joined in order along the recording's first dimension (its
        time axis, which keeps its coordinate). Per-segment summaries have a
        ``segment`` dimension. ``segments`` says how many segments each point has;
        ``<dim>_length`` the true length of a joined axis when points differ.

    Examples
    --------
    >>> import tempfile
    >>> import notebookscan as ns
    >>> from notebookscan.demo_network import lif_network
    >>> path = tempfile.mkdtemp()
    >>> _ = ns.Scan(lif_network, ns.grid(g=[5.0]), path, segments=3,
    ...             segment_duration=0.01).run(executor="serial", progress=False)
    >>> open_recordings(path).v.sizes["time"]     # three segments of 10 samples, joined
    30
    """
    root = os.path.abspath(os.fspath(path))
    store = Store(os.path.join(root, "segments"))
    if not store.exists:
        raise StoreError(f"{root!r} holds no segment recordings (no segments/shards in it); "
                         "give the directory passed to SegmentedScan(store=...), after a run.")
    main_meta = Store(root).metadata()
    names = list(main_meta.get("names") or
                 [n for n in store.metadata().get("names", []) if n not in SEGMENT_NAMES])
    table = store.table()
    table = table.take(np.flatnonzero(table.bookkeeping["status"] == "done")) if len(table) \
        else table
    links_col = table.params.get("link", np.zeros(0, dtype=np.int64)).astype(np.int64)
    if link is not None:
        table = table.take(np.flatnonzero(links_col == link))
        links_col = links_col[links_col == link]
    all_links = sorted(set(links_col.tolist()))
    by_link = link is None and len(all_links) > 1
    roles = {name: attrs.get(ROLE_ATTR, "point") for name, attrs in table.result_attrs.items()}
    wanted = [n for n, r in roles.items() if r in ("recording", "summary")]
    if variables is not None:
        unknown = sorted(set(variables) - set(wanted))
        if unknown:
            raise StoreError(f"no recording or summary named {unknown} in {root}; the store "
                             f"has {sorted(wanted)}")
        wanted = [n for n in wanted if n in variables]
    segment_col = table.params.get("segment", np.zeros(0, dtype=np.int64)).astype(np.int64)
    point_keys = table.results.get("point_key", np.zeros(0, dtype=object))
    groups: dict[tuple[str, int], list[int]] = {}
    for row in range(len(table)):  # rows come sorted by parameters, link, segment
        groups.setdefault((str(point_keys[row]), int(links_col[row])), []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: int(segment_col[r]))
    order = list(groups)
    counts = []
    for (key, lk), rows in groups.items():
        segs = segment_col[rows].tolist()
        contiguous = next((i for i, s in enumerate(segs) if s != i), len(segs))
        if contiguous < len(segs):
            warnings.warn(f"point {key} (link {lk}) has recordings of segments {segs[:8]}… but "
                          f"not of segment {contiguous}; its recordings end before it (a shard "
                          "was set aside or is missing).", StoreWarning, stacklevel=2)
            groups[(key, lk)] = rows[:contiguous]
        counts.append(contiguous)
    results: dict[str, np.ndarray] = {}
    result_dims: dict[str, tuple[str, ...]] = {}
    result_attrs: dict[str, dict[str, Any]] = {}
    lengths: dict[str, np.ndarray] = {}
    coords: dict[str, np.ndarray] = {}
    for name in wanted:
        dims = table.result_dims[name]
        attrs = table.result_attrs.get(name, {})
        data = table.results[name]
        blocks = []
        time_blocks: list[np.ndarray] = []
        for key_link in order:
            rows = groups[key_link]
            if roles[name] == "summary":
                parts = [_row_slice(data, r, [int(table.lengths[d][r]) for d in dims])
                         for r in rows]
                blocks.append(_stack(parts, data.dtype)[0] if parts else
                              np.zeros((0, *data.shape[1:]), dtype=data.dtype))
                continue
            parts, times = [], []
            for r in rows:
                sizes = [int(table.lengths[d][r]) for d in dims]
                parts.append(_row_slice(data, r, sizes))
                t = _coord_slice(table.coords, dims[0], r, sizes[0])
                if t is not None:
                    times.append(t)
            blocks.append(np.concatenate(parts) if parts else
                          np.zeros((0, *data.shape[2:]), dtype=data.dtype))
            if dims[0] in table.coords:
                time_blocks.append(np.concatenate(times) if times else np.zeros(0))
        if not blocks:
            continue
        decoded = [decode_result(b, attrs) for b in blocks]
        stacked, first = _stack(decoded, np.result_type(*[b.dtype for b in decoded]))
        own = ("segment", *dims) if roles[name] == "summary" else dims
        results[name] = stacked
        result_dims[name] = own
        result_attrs[name] = {k: v for k, v in attrs.items() if not k.startswith("notebookscan_")}
        lengths.setdefault(own[0], first)
        if roles[name] == "recording" and time_blocks and own[0] not in coords:
            coords[own[0]] = _joined_coordinate(time_blocks)
        for dim in own[1:]:
            if dim in table.coords and dim not in coords and table.coords[dim].ndim == 1:
                coords[dim] = table.coords[dim]
    params: dict[str, np.ndarray] = {}
    first_rows = [groups[k][0] if groups[k] else None for k in order]
    for name in names:
        column = table.params[name]
        params[name] = np.array([column[r] for r in first_rows if r is not None],
                                dtype=column.dtype)
    keys = np.array([k for k, _ in order], dtype=object)
    table_names = tuple(names)
    if by_link:
        params["link"] = np.array([lk for _, lk in order], dtype=np.int64)
        table_names = (*names, "link")
    results["segments"] = np.array(counts, dtype=np.int64)
    result_dims["segments"] = ()
    result_attrs["segments"] = {"long_name": "segments stored for the point"}
    bookkeeping = {"key": keys if not by_link else
                   np.array([f"{k}/link-{lk}" for k, lk in order], dtype=object)}
    joined = Table(table_names, params, bookkeeping, results, result_dims, result_attrs,
                   lengths, coords, table.runs)
    layout = _layout(main_meta, names, by_link, link, all_links)
    ds = to_dataset(joined, layout)
    ds.attrs["notebookscan_recordings"] = "joined segments"
    return ds


def _joined_coordinate(blocks: list[np.ndarray]) -> np.ndarray:
    """One shared coordinate when every point's joined axis agrees (as a prefix), else 2-D."""
    longest = max(blocks, key=len)
    if all(np.array_equal(b, longest[: len(b)]) for b in blocks):
        return longest
    out = np.full((len(blocks), len(longest)), np.nan)
    for i, b in enumerate(blocks):
        out[i, : len(b)] = b
    return out


def _layout(meta: dict[str, Any], names: list[str], by_link: bool, link: int | None,
            links: list[int]) -> Layout:
    stored = Layout.from_json(meta["layout"]) if "layout" in meta else Layout("points", ())
    extra = ("link",) if by_link else ()
    if stored.kind == "grid" and stored.dims:
        return Layout("grid", (*stored.dims, *extra))
    return Layout("points", (*names, *extra))
