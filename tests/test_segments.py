"""Segmented points: state checkpoints, streamed recordings, extend, chains, files, failures."""

from __future__ import annotations

import hashlib
import os
import signal
import warnings

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.demo_network import LIFNetwork, lif_network, rebalance
from notebookscan.errors import ScanError, StoreWarning
from notebookscan.segments import (
    Recorder,
    Segment,
    SegmentedScan,
    StateError,
    check_resumable,
    decode_state,
    encode_state,
    iterate,
    merge_segmented,
    open_recordings,
    states_equal,
)

STEPS = 5  # rows per segment of the counter model


def counter(rate: float, segments):
    """x(t) = rate * (t + 1) for t = 0, 1, 2, ...: known in closed form for any segmentation."""
    total = 0.0 if segments.state is None else segments.state["total"]
    for segment in segments:
        t = segments_time(segment.index)
        x = total + rate * np.arange(1, STEPS + 1)
        total = float(x[-1])
        yield Segment({"x": x}, state={"total": total}, time=t,
                      summary={"last": total, "index": segment.index})


def segments_time(index: int) -> np.ndarray:
    return index * STEPS + np.arange(STEPS)


def _serial(scan, **kwargs):
    return scan.run(executor="serial", progress=False, **kwargs).progress


# ---------------------------------------------------------------------- state encoding


def test_state_round_trips_every_kind_exactly():
    state = {
        "v": np.array([0.1, -0.0, np.nan, np.inf]),
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ints": np.array([-(2**63), 2**63 - 1]),
        "u8": np.array([2**64 - 1], dtype=np.uint64),
        "flags": np.array([True, False]),
        "names": np.array(["a", "bcd"]),
        "empty": np.zeros((0, 3)),
        "zero_d": np.array(2.5),
        "step": 12, "dt": 1e-4, "on": True, "label": "héllo", "nothing": None,
        "np_int": np.int16(-3), "np_float": np.float32(0.5),
        "delays": [1, 2, 3], "pair": (0.5, 1.5),
        "net": {"w": np.eye(2), "deep": {"k7": 1}, "123 odd name/x": 3.0},
        "k0": "a generated-looking name",
    }
    back = decode_state(encode_state(state))
    assert states_equal(state, back) == ""
    assert list(back) == list(state) and list(back["net"]) == list(state["net"])
    assert type(back["step"]) is int and type(back["np_int"]) is np.int16
    assert back["pair"] == (0.5, 1.5) and back["nothing"] is None


def test_the_empty_state_is_encoded_once():
    """A model whose state lives in its files (Brian2) hands over {} after every segment:
    one encoding, the same object each time, so a task's segments pickle it once."""
    empty = encode_state({})
    assert encode_state({}) is empty and decode_state(empty) == {}
    assert encode_state({"x": 1}) is not encode_state({"x": 1})


@pytest.mark.parametrize("value, hint", [
    (object(), "Convert it"), (np.array([1 + 2j]), "real and imaginary"),
    ([[1, 2], [3]], "dict of arrays"), (2**70, "too large"),
])
def test_state_refuses_what_it_cannot_keep(value, hint):
    with pytest.raises(StateError, match=hint) as info:
        encode_state({"net": {"bad": value}})
    assert "'net/bad'" in str(info.value)


# ---------------------------------------------------------------------- run, extend


def test_counter_recordings_are_continuous_and_extend_runs_only_new_segments(tmp_path):
    space = ns.grid(rate=[1.0, 2.5])
    scan = SegmentedScan(counter, space, tmp_path / "s", segments=3)
    progress = _serial(scan)
    assert (progress.segments_done, progress.segments_total, progress.done) == (6, 6, 2)
    ds = scan.recordings()
    assert ds.x.dims == ("rate", "time") and ds.time.values.tolist() == list(range(15))
    np.testing.assert_array_equal(ds.x.values, np.outer([1.0, 2.5], np.arange(1, 16)))
    assert ds.last.dims == ("rate", "segment")
    assert scan.results().segments.values.tolist() == [3, 3]

    again = _serial(scan)  # nothing left to do
    assert (again.segments_done, again.skipped) == (0, 2)

    seen = []
    scan.events.on("segment_done", lambda **kw: seen.append((kw["key"], kw["segment"])))
    extended = scan.extend(segments=2, executor="serial", progress=False).progress
    assert extended.segments_done == 4 and sorted(s for _, s in seen) == [3, 3, 4, 4]
    ds = scan.recordings()
    np.testing.assert_array_equal(ds.x.values, np.outer([1.0, 2.5], np.arange(1, 26)))
    assert ds.time.values.tolist() == list(range(25))
    rows = scan.results()
    assert rows.segments.values.tolist() == [5, 5] and rows.last.values.tolist() == [25.0, 62.5]
    assert rows.ns_status.values.tolist() == ["done", "done"]

    # a fresh scan object built the same way resumes the same plan
    fresh = SegmentedScan(counter, space, tmp_path / "s", segments=3)
    assert _serial(fresh).segments_done == 0
    assert fresh.status()["complete"] == 2


def test_a_missing_point_row_is_rewritten_from_the_final_checkpoint(tmp_path):
    scan = SegmentedScan(counter, ns.grid(rate=[1.0, 2.0]), tmp_path / "s", segments=2)
    _serial(scan)
    before = scan.results()
    for name in os.listdir(tmp_path / "s" / "shards"):  # as if killed before writing rows
        os.unlink(tmp_path / "s" / "shards" / name)
    assert set(scan.results().ns_status.values) == {"missing"}
    assert _serial(scan).segments_done == 0
    after = scan.results()
    for name in ("last", "index", "segments", "link", "ns_status", "ns_seed"):
        xr.testing.assert_identical(after[name], before[name])


def test_extend_by_duration_and_resume_after_stop(tmp_path):
    scan = SegmentedScan(counter, ns.grid(rate=[1.0, 2.0, 3.0]), tmp_path / "s", segments=2,
                         segment_duration=0.5)
    stopper = scan.events

    def stop_after_three(**kw):
        if kw["segment"] == 0 and kw["point"]["rate"] == 2.0:
            scan.stop(wait=False)

    stopper.on("segment_done", stop_after_three)
    first = _serial(scan)
    assert first.stopped and first.segments_done < 6
    stopper.off("segment_done", stop_after_three)
    assert scan.status()["partial"] + scan.status()["not_started"] >= 1
    rest = _serial(scan)
    assert first.segments_done + rest.segments_done == 6
    progress = scan.extend(duration=1.5, executor="serial", progress=False).progress
    assert progress.segments_done == 9
    np.testing.assert_array_equal(scan.recordings().x.values,
                                  np.outer([1.0, 2.0, 3.0], np.arange(1, 26)))
    with pytest.raises(ScanError, match="whole number of segments"):
        scan.extend(duration=0.7)


def test_generator_and_class_forms_give_identical_recordings(tmp_path):
    space = ns.grid(g=[4.0], n=[40])
    a = SegmentedScan(lif_network, space, tmp_path / "gen", segments=3, segment_duration=0.06)
    b = SegmentedScan(LIFNetwork, space, tmp_path / "cls", segments=3, segment_duration=0.06)
    _serial(a)
    b.run(executor="processes", progress=False)
    xr.testing.assert_identical(a.recordings().drop_attrs(), b.recordings().drop_attrs())
    assert states_equal(a.state({"g": 4.0, "n": 40}), b.state({"g": 4.0, "n": 40})) == ""


# ---------------------------------------------------------------------- chains


def test_chain_starts_each_run_from_the_transformed_final_state(tmp_path):
    def halve(state):
        return {"total": state["total"] / 2}

    scan = SegmentedScan(counter, ns.grid(rate=[2.0, 4.0]), tmp_path / "s", segments=2)
    progress = scan.chain(halve, runs=3, executor="serial", progress=False).progress
    assert progress.segments_done == 12 and progress.done == 2
    ds = scan.recordings()
    assert ds.x.dims == ("rate", "link", "time")
    ramp = np.arange(1, 11)
    for i, rate in enumerate([2.0, 4.0]):
        start = 0.0
        for link in range(3):
            np.testing.assert_array_equal(ds.x.values[i, link], start + rate * ramp)
            start = (start + rate * 10) / 2
    link1 = scan.recordings(link=1)
    assert "link" not in link1.dims and link1.x.sel(rate=2.0).values[0] == 10.0 + 2.0
    assert scan.results().link.values.tolist() == [2, 2]
    assert scan.state({"rate": 2.0}, link=0) == {"total": 20.0}

    # calling chain again with the same number of runs is a no-op; more runs add links
    assert scan.chain(halve, runs=3, executor="serial", progress=False).progress.done == 0
    more = scan.chain(halve, runs=4, executor="serial", progress=False).progress
    assert more.segments_done == 4


def test_chain_of_the_lif_network_rebalances_weights(tmp_path):
    scan = SegmentedScan(lif_network, ns.grid(g=[4.0], n=[40]), tmp_path / "s", segments=1,
                         segment_duration=0.06)
    scan.chain(rebalance, runs=2, executor="serial", progress=False)
    before = scan.state({"g": 4.0, "n": 40}, link=0)["weights"]
    after = scan.state({"g": 4.0, "n": 40}, link=1)["weights"]
    np.testing.assert_array_equal(after, rebalance({"weights": before})["weights"])
    summary = scan.recordings()
    assert summary.w_max.sel(link=1).item() == after[after > 0].max() < before.max()
    assert np.count_nonzero(after != before) == 2


def test_failing_transform_fails_only_that_point(tmp_path):
    def picky(state, point):
        if point["rate"] > 1:
            raise ValueError("no")
        return state

    scan = SegmentedScan(counter, ns.grid(rate=[1.0, 2.0]), tmp_path / "s", segments=1)
    progress = scan.chain(picky, runs=2, executor="serial", progress=False).progress
    assert (progress.done, progress.failed) == (1, 1)
    assert scan.results().link.sel(rate=2.0).item() == 0  # its first run stays done


# ---------------------------------------------------------------------- checkpoint files


def filed(tag: str, segments):
    """Writes a file each segment; reports the digest of the file it was handed."""
    for segment in segments:
        received = ""
        if segment.restore_dir is not None:
            with open(os.path.join(segment.restore_dir, "sim", "queue.bin"), "rb") as f:
                received = hashlib.sha256(f.read()).hexdigest()
        payload = segment.rng().bytes(50_000) + f"{tag}:{segment.index}".encode()
        os.makedirs(os.path.join(segment.save_dir, "sim"))
        with open(os.path.join(segment.save_dir, "sim", "queue.bin"), "wb") as f:
            f.write(payload)
        yield Segment({"n": np.array([segment.index])}, state={}, time=[segment.index],
                      summary={"received": received,
                               "written": hashlib.sha256(payload).hexdigest()})


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_checkpoint_files_come_back_byte_for_byte(tmp_path, executor):
    scan = SegmentedScan(filed, ns.grid(tag=["a", "b"]), tmp_path / "s", segments=2)
    scan.run(executor=executor, progress=False)
    checkpoint = scan.checkpoint({"tag": "a"})
    assert checkpoint is not None and list(checkpoint.file_paths()) == ["sim/queue.bin"]
    with open(checkpoint.file_paths()["sim/queue.bin"], "rb") as f:
        kept = f.read()
    assert kept.endswith(b"a:1")
    scan.extend(segments=1, executor=executor, progress=False)  # resumes from the kept file
    ds = scan.recordings()
    written, received = ds.written.sel(tag="a").values, ds.received.sel(tag="a").values
    assert received[0] == "" and list(received[1:]) == list(written[:-1])
    assert received[2] == hashlib.sha256(kept).hexdigest()


# ---------------------------------------------------------------------- failures


def flaky(x: int, segments, fail_at: int = -1):
    state = segments.state or {"n": 0}
    for segment in segments:
        if segment.index == fail_at:
            raise RuntimeError(f"broken in segment {segment.index}")
        state = {"n": state["n"] + x}
        yield Segment({"n": np.array([state["n"]])}, state=state, time=[segment.index])


def test_a_failing_segment_keeps_earlier_segments_and_retries_on_request(tmp_path):
    space = ns.grid(x=[1, 2])
    broken = SegmentedScan(lambda x, segments: flaky(x, segments, fail_at=2 if x == 2 else -1),
                           space, tmp_path / "s", segments=4)
    progress = _serial(broken)
    assert (progress.done, progress.failed, progress.segments_failed) == (1, 1, 1)
    rows = broken.results()
    assert rows.ns_status.sel(x=2).item() == "failed"
    assert "broken in segment 2" in rows.ns_error.sel(x=2).item()
    assert broken.recordings().segments.values.tolist() == [4, 2]
    with pytest.warns(UserWarning, match="failed in earlier runs"):
        assert _serial(broken).segments_done == 0
    fixed = SegmentedScan(flaky, space, tmp_path / "s", segments=4)
    assert _serial(fixed, retry_failed=True).segments_done == 2  # from the checkpoint after 2
    np.testing.assert_array_equal(fixed.recordings().n.values, [[1, 2, 3, 4], [2, 4, 6, 8]])
    assert fixed.results().ns_status.values.tolist() == ["done", "done"]


def test_a_corrupt_checkpoint_is_set_aside_and_the_point_recomputes(tmp_path):
    scan = SegmentedScan(counter, ns.grid(rate=[1.0]), tmp_path / "s", segments=3,
                         keep_checkpoints=2)
    _serial(scan)
    checkpoint = scan.checkpoints.latest(scan.space.keys()[0], 0)
    with open(os.path.join(checkpoint.path, "state.nc"), "r+b") as f:
        f.seek(100)
        f.write(b"garbage")
    with pytest.warns(StoreWarning, match="cannot be used"):
        progress = scan.extend(segments=1, executor="serial", progress=False).progress
    assert progress.segments_done == 2  # segment 2 again, then 3
    assert os.listdir(tmp_path / "s" / "segments" / "quarantine" / "checkpoints")
    np.testing.assert_array_equal(scan.recordings().x.values[0], np.arange(1, 21))


def suicidal(x: int, segments, marker: str = ""):
    state = segments.state or {"n": 0}
    for segment in segments:
        if segment.index == 1 and marker and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-segment
        state = {"n": state["n"] + x}
        yield Segment({"n": np.array([state["n"]])}, state=state, time=[segment.index])


def test_a_killed_pool_worker_costs_one_segment(tmp_path):
    marker = str(tmp_path / "killed-once")
    scan = SegmentedScan(suicidal, ns.grid(x=[1, 2, 3], marker=[marker]), tmp_path / "s",
                         segments=3)
    progress = scan.run(executor="processes", progress=False).progress
    assert os.path.exists(marker) and (progress.done, progress.failed) == (3, 0)
    np.testing.assert_array_equal(scan.recordings().n.values.reshape(3, 3),
                                  np.outer([1, 2, 3], [1, 2, 3]))


def sleepy(x: int, segments):
    import time

    for segment in segments:
        if segment.index == 1 and x == 2:
            time.sleep(5)
        yield Segment({"n": np.array([x])}, state={}, time=[segment.index])


def test_a_segment_that_runs_too_long_fails_its_point_only(tmp_path):
    scan = SegmentedScan(sleepy, ns.grid(x=[1, 2]), tmp_path / "s", segments=3)
    updates = []
    scan.events.on("progress", lambda **kw: updates.append(kw))
    progress = _serial(scan, timeout=0.3)
    assert (progress.done, progress.failed) == (1, 1)
    assert "PointTimeout" in scan.results().ns_error.sel(x=2).item()
    assert scan.status() == {"complete": 1, "partial": 0, "failed": 1, "not_started": 0,
                             "segments_done": 4, "segments_total": 6}
    last = updates[-1]
    assert (last["segments_done"], last["segments_total"], last["done"]) == (4, 4, 1)


# ---------------------------------------------------------------------- validation


def test_what_a_segmented_scan_refuses(tmp_path):
    space = ns.grid(rate=[1.0])
    with pytest.raises(ScanError, match="generator function"):
        SegmentedScan(lambda rate: rate, space, tmp_path / "a", segments=2)
    with pytest.raises(ScanError, match="no 'segments' argument"):
        def no_segments(rate):
            yield Segment()
        SegmentedScan(no_segments, space, tmp_path / "a", segments=2)
    with pytest.raises(ScanError, match="init"):
        SegmentedScan(type("Half", (), {"advance": lambda self, s, c: None}), space,
                      tmp_path / "a", segments=2)
    with pytest.raises(ScanError, match="uses itself"):
        SegmentedScan(counter, ns.grid(rate=[1.0], link=[0]), tmp_path / "a", segments=2)
    with pytest.raises(ScanError, match="positive int"):
        SegmentedScan(counter, space, tmp_path / "a", segments=0)
    with pytest.raises(ns.SpaceError, match="requires parameter 'rate'"):
        SegmentedScan(counter, ns.grid(other=[1]), tmp_path / "a", segments=2)
    with pytest.raises(ScanError, match="segment_duration"):
        SegmentedScan(counter, space, tmp_path / "a", segments=1).extend(duration=1.0)


@pytest.mark.parametrize("body, message", [
    ("yield Segment({'x': np.zeros(3)}, state={})", "needs coordinates"),
    ("yield Segment({'x': 1.0}, state={}, time=[0])", "single value"),
    ("yield Segment({'x': np.zeros(2)}, time=[0, 1])", "no state"),
    ("yield Segment({'x': np.zeros(2)}, state={'o': object()}, time=[0, 1])", "StateError"),
    ("yield 3", "yielded a int"),
    ("return; yield", "stopped before segment 0"),
])
def test_bad_segments_become_failures_with_a_reason(tmp_path, body, message):
    namespace: dict = {"np": np, "Segment": Segment}
    exec(f"def model(rate, segments):\n    for s in segments:\n        {body}", namespace)
    scan = SegmentedScan(namespace["model"], ns.grid(rate=[1.0]), tmp_path / "s", segments=1)
    assert _serial(scan).failed == 1
    assert message in scan.results().ns_error.item()


def test_merging_two_segmented_stores_continues_from_the_newest_checkpoints(tmp_path):
    space = ns.grid(rate=[1.0, 2.0, 3.0])
    laptop = SegmentedScan(counter, space.where(lambda p: p["rate"] < 3), tmp_path / "laptop",
                           segments=2)
    cluster = SegmentedScan(counter, space.where(lambda p: p["rate"] > 1), tmp_path / "cluster",
                            segments=4)
    _serial(laptop)
    _serial(cluster)
    report = merge_segmented([tmp_path / "laptop", tmp_path / "cluster"], tmp_path / "all")
    assert len(report.checkpoints_copied) == 4 and "4 checkpoint(s)" in str(report)
    merged = SegmentedScan(counter, space, tmp_path / "all", segments=4)
    progress = _serial(merged)
    assert progress.segments_done == 2  # only rate=1 needed segments 2 and 3
    np.testing.assert_array_equal(merged.recordings().x.values,
                                  np.outer([1.0, 2.0, 3.0], np.arange(1, 21)))
    again = merge_segmented(tmp_path / "cluster", tmp_path / "all")
    assert not again.checkpoints_copied and len(again.checkpoints_present) == 2
    with pytest.raises(ns.StoreError, match="not a segmented store"):
        merge_segmented(tmp_path / "nowhere", tmp_path / "all")


def test_the_store_functions_know_a_segmented_stores_parts(tmp_path):
    # ns.merge, ns.verify and ns.compact handle recordings and checkpoints, not only shards/
    space = ns.grid(rate=[1.0, 2.0])
    _serial(SegmentedScan(counter, space, tmp_path / "a", segments=3))
    report = ns.merge(tmp_path / "a", tmp_path / "b")
    assert len(report.checkpoints_copied) == 2 and report.recordings.copied
    assert "2 checkpoint(s) copied" in str(report)
    merged = SegmentedScan(counter, space, tmp_path / "b", segments=3)
    assert _serial(merged).segments_done == 0  # everything came along: nothing to run
    np.testing.assert_array_equal(merged.recordings().x.values,
                                  np.outer([1.0, 2.0], np.arange(1, 16)))
    healthy = ns.verify(tmp_path / "b")
    assert healthy.healthy and healthy.checkpoints == 2
    assert any(name.startswith("segments/shards/") for name in healthy.ok)
    # a damaged checkpoint and a damaged recordings shard are both named
    checkpoint_root = tmp_path / "b" / "segments" / "checkpoints"
    state = next(p for p in checkpoint_root.rglob("*")
                 if p.is_file() and p.name != "checkpoint.json")
    state.write_bytes(b"garbage")
    recording = next((tmp_path / "b" / "segments" / "shards").glob("*.nc"))
    recording.write_bytes(b"not netcdf")
    broken = ns.verify(tmp_path / "b")
    assert any(k.startswith("segments/checkpoints/") for k in broken.corrupt)
    assert "segments/shards/" + recording.name in broken.corrupt
    assert ns.compact(tmp_path / "a").recordings is not None


# ---------------------------------------------------------------------- recorder, helpers


def test_recorder_decimation_runs_on_across_segments():
    def long_run(steps, every):
        rec = Recorder(dt=0.5, steps=steps, every=every)
        x = np.zeros(2)
        rec.watch("x", x)
        for _ in range(steps):
            rec.tick()
            x += 1
        return rec.recordings()["x"]

    whole = long_run(30, 7)
    parts = []
    box = {"x": np.zeros(2)}
    for index in range(3):
        rec = Recorder(dt=0.5, steps=10, start_step=10 * index, interval=3.5)
        rec.watch("x", lambda: box["x"])
        for _ in range(10):
            rec.tick()
            box["x"] = box["x"] + 1  # rebound each step: watched through a callable
        parts.append(rec.recordings()["x"])
    xr.testing.assert_identical(xr.concat(parts, "time"), whole)
    assert whole.time.values.tolist() == [0.0, 3.5, 7.0, 10.5, 14.0]
    with pytest.raises(ScanError, match="whole number of steps"):
        Recorder(dt=0.5, steps=10, interval=0.7)


def test_check_resumable_finds_state_a_model_forgot():
    check_resumable(lif_network, {"g": 4.0, "n": 30}, segments=3, segment_duration=0.01)

    def forgetful(segments):
        seen = []  # should be in the state
        for segment in segments:
            seen.append(segment.index)
            yield Segment({"c": np.array([len(seen)])}, state={}, time=[segment.index])

    with pytest.raises(ScanError, match="recording 'c' of segment 1 differs"):
        check_resumable(forgetful, {}, segments=2)


def test_iterate_runs_a_point_straight_through():
    outs = list(iterate(counter, {"rate": 2.0}, segments=3))
    assert [o.summary["last"] for o in outs] == [10.0, 20.0, 30.0]


def test_recordings_of_a_points_space_line_up_with_results(tmp_path):
    def labelled(a: float, b: str, segments):
        for segment in segments:
            yield Segment({"x": np.full(2, a)}, state={}, time=[2 * segment.index, 1 + 2 *
                                                              segment.index])

    space = ns.points([{"a": 2.5, "b": "y"}, {"a": 1.0, "b": "x"}]) * ns.trials(2)
    scan = SegmentedScan(labelled, space, tmp_path / "s", segments=2)
    _serial(scan)
    ds, rows = scan.recordings(), scan.results()
    assert ds.x.dims == ("point", "time")
    assert ds.ns_key.values.tolist() == rows.ns_key.values.tolist()
    np.testing.assert_array_equal(ds.x.values, np.repeat(ds.a.values[:, None], 4, axis=1))


def test_open_recordings_needs_a_segmented_store(tmp_path):
    with pytest.raises(ns.StoreError, match="no segment recordings"):
        open_recordings(tmp_path)
    scan = SegmentedScan(counter, ns.grid(rate=[1.0]), tmp_path / "s", segments=1)
    _serial(scan)
    with pytest.raises(ns.StoreError, match="no recording or summary named"):
        open_recordings(tmp_path / "s", variables=["nope"])
    only = open_recordings(tmp_path / "s", variables=["x"])
    assert set(only.data_vars) >= {"x", "segments"} and "last" not in only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ns.open_store(tmp_path / "s")  # the points' rows stay a normal store


def test_small_noisy_recordings_can_be_stored(tmp_path):
    def noisy(k: int, segments):
        for segment in segments:
            yield Segment({"x": segment.rng().normal(size=(20, 5))}, state={},
                          time=20 * segment.index + np.arange(20))

    scan = SegmentedScan(noisy, ns.grid(k=[0]), tmp_path / "s", segments=1)
    _serial(scan)


def test_status_and_export_of_a_segmented_store_show_its_parts(tmp_path):
    import subprocess
    import sys

    _serial(SegmentedScan(counter, ns.grid(rate=[1.0, 2.0]), tmp_path / "s", segments=3))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    status = subprocess.run([sys.executable, "-m", "notebookscan", "status", str(tmp_path / "s")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "6 segment recording(s)" in status.stdout and "checkpoint(s)" in status.stdout
    out = tmp_path / "all.nc"
    export = subprocess.run([sys.executable, "-m", "notebookscan", "export", str(tmp_path / "s"),
                             str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert export.returncode == 0, export.stderr
    recordings = xr.open_dataset(tmp_path / "all.recordings.nc")
    np.testing.assert_array_equal(recordings.x.values, np.outer([1.0, 2.0], np.arange(1, 16)))
