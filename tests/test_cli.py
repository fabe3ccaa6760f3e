"""The ``notebookscan`` command line, mostly through real subprocesses on real stores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.cli import UsageError, main
from notebookscan.cli.inputs import parse_axis

BIN = Path(sys.executable).parent / "notebookscan"
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "notebookscan"]
SUBCOMMANDS = ("run", "attach", "watch", "stop", "status", "merge", "compact", "verify", "export",
               "demo")

MODEL = textwrap.dedent('''\
    def simulate(x: float, mode: str = "a", seed: int = 0):
        """y = x**2; mode "b" fails above x = 2.5."""
        if mode == "b" and x > 2.5:
            raise ValueError(f"x={x} is too large for mode b")
        return {"y": float(x) ** 2, "noise": (seed % 1000) / 1000.0}
''')


def run_cli(*args: str, cwd: Path | str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "model.py").write_text(MODEL)
    return tmp_path


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with 12 points (x 1..3 × mode a,b × 2 trials), 2 of them failed."""
    root = tmp_path_factory.mktemp("scanned")
    (root / "model.py").write_text(MODEL)
    result = run_cli("run", "model.py:simulate", "--store", "store", "--axis", "x=1:3:3",
                     "--axis", "mode=a,b", "--trials", "2", "--executor", "serial", cwd=root)
    assert result.returncode == 1, result.stderr  # the failed points
    return root / "store"


def copy_store(store: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(store, target)
    return target


# ------------------------------------------------------------------ help


def test_main_help_lists_every_command_with_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stdout
    assert "examples:" in result.stdout and "exit codes" in result.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: notebookscan {command}")
    assert "examples:" in result.stdout
    assert f"notebookscan {command}" in result.stdout.split("examples:")[1]


def test_version_and_python_dash_m() -> None:
    result = subprocess.run([sys.executable, "-m", "notebookscan", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"notebookscan {ns.__version__}"


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(("args", "argument"), [
    (["frobnicate"], "COMMAND"),
    ([], "COMMAND"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1:"], "--axis"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x"], "--axis"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1:3:zero"], "--axis"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1,2", "--axis", "x=3"], "--axis"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "nope=1,2"], "--axis"),
    (["run", "model.py:simulate", "--store", "s", "--log-axis", "x=0:1:3"], "--log-axis"),
    (["run", "model.py:simulate", "--axis", "x=1,2"], "--store"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1", "--engines", "0"],
     "--engines"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1", "--executor", "gpu"],
     "--executor"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1", "--executor", "serial",
      "--profile", "p"], "--profile"),
    (["run", "model.py:simulate", "--store", "s", "--axis", "x=1", "--connection-file",
      "missing.json"], "--connection-file"),
    (["run", "no_such_module:simulate", "--store", "s", "--axis", "x=1"], "MODULE:FUNCTION"),
    (["run", "model:no_such_function", "--store", "s", "--axis", "x=1"], "MODULE:FUNCTION"),
    (["run", "missing.py:simulate", "--store", "s", "--axis", "x=1"], "MODULE:FUNCTION"),
    (["run", "simulate", "--store", "s", "--axis", "x=1"], "MODULE:FUNCTION"),
    (["run", "--config", "missing.toml"], "--config"),
    (["status", "no-such-store"], "DIR"),
    (["status", "."], "DIR"),
    (["compact", "no-such-store"], "DIR"),
    (["verify", "no-such-store"], "DIR"),
    (["export", "no-such-store", "out.nc"], "DIR"),
    (["merge", "no-such-store", "dest"], "SRC"),
    (["merge", "only-one"], "DEST"),
])
def test_bad_arguments_exit_2_naming_the_argument(workdir: Path, args: list[str],
                                                  argument: str) -> None:
    result = run_cli(*args, cwd=workdir)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error:" in result.stderr
    # argparse's own wording for a missing positional is "arguments are required: X"
    assert (f"argument {argument}" in result.stderr
            or f"required: {argument}" in result.stderr), result.stderr
    assert "--help" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_files_exit_2(workdir: Path) -> None:
    (workdir / "bad.toml").write_text("function = 'model:simulate'\nstores = 's'\n")
    result = run_cli("run", "--config", "bad.toml", cwd=workdir)
    assert result.returncode == 2 and "'stores'" in result.stderr
    assert "known keys" in result.stderr
    (workdir / "broken.toml").write_text("[axes\n")
    result = run_cli("run", "--config", "broken.toml", cwd=workdir)
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    (workdir / "range.toml").write_text("[axes]\nx = {start = 1, stop = 2}\n")
    result = run_cli("run", "model:simulate", "--store", "s", "--config", "range.toml",
                     cwd=workdir)
    assert result.returncode == 2 and "needs start, stop and num" in result.stderr


def test_a_store_with_other_parameters_is_refused(scanned: Path, workdir: Path) -> None:
    result = run_cli("run", "model.py:simulate", "--store", str(scanned), "--axis", "x=1,2",
                     "--executor", "serial", cwd=workdir)
    assert result.returncode == 2
    assert "argument --store" in result.stderr and "holds parameters" in result.stderr


def test_yaml_without_pyyaml_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "scan.yaml").write_text("axes: {x: [1, 2]}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    code = main(["run", "m:f", "--store", str(tmp_path / "s"),
                     "--config", str(tmp_path / "scan.yaml")])
    assert code == 2
    assert "PyYAML" in capsys.readouterr().err


# ------------------------------------------------------------------ axes (in process)


def test_axis_syntax() -> None:
    assert parse_axis("k=1:20:20") == ("k", list(range(1, 21)))
    assert parse_axis("k=0:1:3") == ("k", [0.0, 0.5, 1.0])
    assert parse_axis("tau=0.005,0.01") == ("tau", [0.005, 0.01])
    assert parse_axis("flag=true,false") == ("flag", [True, False])
    assert parse_axis("method=rk4") == ("method", "rk4")
    assert parse_axis("n=5") == ("n", 5)
    name, values = parse_axis("dt=1e-4:1e-2:3", log=True)
    assert name == "dt"
    np.testing.assert_allclose(values, [1e-4, 1e-3, 1e-2])
    for bad in ["k", "=1", "k=", "k=1:2", "k=1:2:3:4", "k=1:2:0", "k=1:2:1.5", "k=1,,2",
                "1k=2", "k=a:b:3"]:
        with pytest.raises(UsageError, match="--axis"):
            parse_axis(bad)
    with pytest.raises(UsageError, match="log axis"):
        parse_axis("dt=1,2", log=True, option="--log-axis")


# ------------------------------------------------------------------ run


def test_run_serial_records_failures_and_retries(scanned: Path, tmp_path: Path) -> None:
    ds = ns.open_store(scanned)
    assert dict(ds.sizes) == {"x": 3, "mode": 2, "trial": 2}
    assert ds.x.values.tolist() == [1, 2, 3]
    assert int((ds.ns_status == "failed").sum()) == 2
    np.testing.assert_allclose(ds.y.sel(mode="a").values[:, 0], [1.0, 4.0, 9.0])
    store = copy_store(scanned, tmp_path)
    workdir = scanned.parent
    again = run_cli("run", "model.py:simulate", "--store", str(store), "--axis", "x=1:3:3",
                    "--axis", "mode=a,b", "--trials", "2", "--executor", "serial", cwd=workdir)
    assert again.returncode == 1
    assert "nothing to compute: all 12 point(s)" in again.stdout
    assert "--retry-failed" in again.stderr + again.stdout
    retry = run_cli("run", "model.py:simulate", "--store", str(store), "--axis", "x=1:3:3",
                    "--axis", "mode=a,b", "--trials", "2", "--executor", "serial",
                    "--retry-failed", cwd=workdir)
    assert retry.returncode == 1
    assert "computed 2 point(s)" in retry.stdout and "2 failed" in retry.stdout


def test_dry_run_lists_what_would_run_and_runs_nothing(scanned: Path) -> None:
    result = run_cli("run", "model.py:simulate", "--store", str(scanned), "--axis", "x=1:4:4",
                     "--axis", "mode=a,b", "--trials", "2", "--dry-run", "--executor", "serial",
                     cwd=scanned.parent)
    assert result.returncode == 0, result.stderr
    assert "4 of 16 point(s) would run" in result.stdout
    assert "(2 failed before)" in result.stdout
    assert len(ns.Store(scanned).index()) == 12


def test_run_processes_with_a_module_from_the_current_directory(workdir: Path) -> None:
    result = run_cli("run", "model:simulate", "--store", "store", "--axis", "x=0.5,1.5",
                     "--log-axis", "seed_scale=1:100:3", "--executor", "processes",
                     "--engines", "2", cwd=workdir)
    # simulate() has no seed_scale parameter: a clear error, nothing runs
    assert result.returncode == 2 and "seed_scale" in result.stderr
    result = run_cli("run", "model:simulate", "--store", "store", "--axis", "x=0.5,1.5",
                     "--axis", "mode=a", "--trials", "3", "--executor", "processes",
                     "--engines", "2", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "computed 6 point(s)" in result.stdout and "6 done, 0 failed" in result.stdout
    ds = ns.open_store(workdir / "store")
    np.testing.assert_allclose(ds.y.sel(mode="a").values, [[0.25] * 3, [2.25] * 3])
    assert all(w.startswith("pid ") for w in ds.ns_worker.values.ravel())
    runs = json.loads(ds.attrs["provenance"])
    assert [r["executor"] for r in runs.values()] == ["ProcessPoolExecutor"]


def test_run_from_a_toml_config_with_command_line_overrides(workdir: Path) -> None:
    (workdir / "scan.toml").write_text(textwrap.dedent("""\
        function = "model.py:simulate"
        store = "from-config"
        trials = 2
        executor = "serial"
        [axes]
        x = "1:2:2"
        mode = ["a", "b"]
        [log_axes]
        """))
    result = run_cli("run", "--config", "scan.toml", "--axis", "x=4", "--trials", "1",
                     cwd=workdir)
    assert result.returncode == 1  # mode b fails at x = 4
    ds = ns.open_store(workdir / "from-config")
    assert dict(ds.sizes) == {"x": 1, "mode": 2, "trial": 1}
    assert ds.ns_status.values.ravel().tolist() == ["done", "failed"]


def test_run_from_a_yaml_config(workdir: Path) -> None:
    pytest.importorskip("yaml")
    (workdir / "scan.yaml").write_text(textwrap.dedent("""\
        function: model:simulate
        axes:
          x: {start: 0.1, stop: 10, num: 3, log: true}
          mode: a
        """))
    result = run_cli("run", "--config", "scan.yaml", "--store", "from-yaml", "--executor",
                     "serial", cwd=workdir)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(ns.open_store(workdir / "from-yaml").x.values, [0.1, 1.0, 10.0])


# ------------------------------------------------------------------ store commands


def test_status_reports_counts_failures_runs_and_size(scanned: Path) -> None:
    result = run_cli("status", str(scanned))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parameters: x, mode, trial (grid layout: x × mode × trial)" in out
    assert "12 stored: 10 done, 2 failed, 0 missing" in out
    assert f"in {len(ns.Store(scanned).shard_files())} shard(s)" in out
    assert "runs (1):" in out and "model:simulate" in out and "serial" in out
    assert "x=3, mode=b, trial=0: ValueError: x=3 is too large for mode b" in out

    data = json.loads(run_cli("status", str(scanned), "--json").stdout)
    assert (data["done"], data["failed"], data["missing"]) == (10, 2, 0)
    assert data["shards"] == len(ns.Store(scanned).shard_files())
    assert data["size_bytes"] == ns.Store(scanned).size_bytes()
    assert len(data["failures"]) == 2 and data["failures"][0]["point"]["mode"] == "b"
    [run] = data["runs"]
    assert run["points"] == 12 and run["failed"] == 2 and run["function"] == "simulate"


def test_merge_then_status_counts_missing_grid_cells(scanned: Path, workdir: Path) -> None:
    other = run_cli("run", "model.py:simulate", "--store", "other", "--axis", "x=4,5",
                    "--axis", "mode=a", "--trials", "2", "--executor", "serial", cwd=workdir)
    assert other.returncode == 0, other.stderr
    result = run_cli("merge", str(scanned), "other", "merged", cwd=workdir)
    assert result.returncode == 0, result.stderr
    copied = len(ns.Store(scanned).shard_files()) + len(ns.Store(workdir / "other").shard_files())
    assert f"merged {copied} shard(s)" in result.stdout
    data = json.loads(run_cli("status", str(workdir / "merged"), "--json").stdout)
    # 5 x values × 2 modes × 2 trials = 20 cells; x=4,5 have no mode-b points: no run's
    # space holds them (the merge carried the runs' scan records), so they are excluded
    assert (data["points"], data["missing"], data["excluded"], data["grid_size"]) == (
        16, 0, 4, 20)
    assert len(data["runs"]) == 2
    assert run_cli("merge", "merged", "merged", cwd=workdir).returncode == 2


def test_compact_rewrites_shards_and_keeps_every_point(scanned: Path, workdir: Path) -> None:
    store = copy_store(scanned, workdir, "store")
    more = run_cli("run", "model.py:simulate", "--store", "store", "--axis", "x=1:4:4",
                   "--axis", "mode=a,b", "--trials", "2", "--executor", "serial", cwd=workdir)
    assert more.returncode == 1
    before = ns.open_store(store)
    shards = len(ns.Store(store).shard_files())
    assert shards >= 2
    result = run_cli("compact", str(store))
    assert result.returncode == 0, result.stderr
    assert f"compacted {shards} shard(s) into 1, 16 point(s)" in result.stdout
    assert len(ns.Store(store).shard_files()) == 1
    xr.testing.assert_identical(ns.open_store(store).drop_attrs(), before.drop_attrs())
    assert "nothing to compact" in run_cli("compact", str(store)).stdout


def test_verify_names_a_truncated_shard_and_exits_1(scanned: Path, tmp_path: Path) -> None:
    store = copy_store(scanned, tmp_path)
    healthy = run_cli("verify", str(store))
    assert healthy.returncode == 0 and "healthy" in healthy.stdout
    shard = ns.Store(store).shard_files()[0]
    path = store / "shards" / shard
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    result = run_cli("verify", str(store))
    assert result.returncode == 1
    assert f"corrupt: {shard}" in result.stdout
    assert path.exists()  # verify moves nothing


def test_export_netcdf_and_csv(scanned: Path, tmp_path: Path) -> None:
    nc, csv = tmp_path / "out.nc", tmp_path / "out.csv"
    result = run_cli("export", str(scanned), str(nc))
    assert result.returncode == 0, result.stderr
    with xr.open_dataset(nc) as ds:
        original = ns.open_store(scanned)
        np.testing.assert_array_equal(ds.y.values, original.y.values)
        assert ds.ns_status.values.tolist() == original.ns_status.values.tolist()
    result = run_cli("export", str(scanned), str(csv))
    assert result.returncode == 0, result.stderr
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == 12
    assert list(frame.columns[:4]) == ["x", "mode", "trial", "ns_key"]
    assert {"y", "noise", "ns_status", "ns_error", "ns_seed", "ns_duration"} <= set(frame.columns)
    assert "ns_traceback" not in frame.columns
    assert sorted(frame.loc[frame.ns_status == "failed", "x"]) == [3, 3]
    again = run_cli("export", str(scanned), str(csv))
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("export", str(scanned), str(csv), "--force").returncode == 0
    bad = run_cli("export", str(scanned), str(tmp_path / "out.xlsx"))
    assert bad.returncode == 2 and "argument FILE" in bad.stderr


# ------------------------------------------------------------------ demo


def test_demo_quick_writes_a_store_and_a_png_and_computes_nothing_twice(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--quick", "--executor", "processes",
                     "--engines", "2")
    assert result.returncode == 0, result.stderr
    assert "computed 20 point(s)" in result.stdout
    assert str(out / "store") in result.stdout and str(out / "firing_rate.png") in result.stdout
    assert (out / "firing_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ds = ns.open_store(out / "store")
    assert dict(ds.sizes)["k"] == 5 and bool((ds.ns_status == "done").all())
    assert ds.rate.sel(k=18).mean() > ds.rate.sel(k=2).mean()
    again = run_cli("demo", "--out", str(out), "--quick", "--executor", "processes")
    assert again.returncode == 0, again.stderr
    assert "nothing to compute: all 20 point(s)" in again.stdout


@pytest.mark.cluster
def test_run_on_local_ipyparallel_engines(workdir: Path) -> None:
    result = run_cli("run", "model:simulate", "--store", "store", "--axis", "x=1:4:4",
                     "--engines", "2", cwd=workdir, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "computed 4 point(s)" in result.stdout
    ds = ns.open_store(workdir / "store")
    assert all(w.startswith("engine ") for w in ds.ns_worker.values.ravel())
