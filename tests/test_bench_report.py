"""bench/report.py's whole-model tables, read off a hand-written pytest-benchmark JSON: the
x onnxruntime targets, the memory table's ratio and target, the zoo train-step target, the GPU
rows' ceiling and targets."""

import importlib.util
import json
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "bench" / "report.py"


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(kind, workload, peer, median, device="cpu", flops=0, **extra):
    info = dict(kind=kind, device=device, workload=workload, peer=peer, batch=1, flops=flops, threads=2, **extra)
    return {"stats": {"median": median}, "extra_info": info}


def _run(tmp_path, benchmarks):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"datetime": "2026-12-03T00:00:00", "benchmarks": benchmarks}))
    report = _report()
    data, groups = report.load(path)
    return report.render(data, groups)


def _line(text, start):
    found = [line for line in text.splitlines() if line.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_zoo_rows_get_onnxruntime_and_torch_targets(tmp_path):
    text = _run(tmp_path, [
        _bench("vgg_small inference", "3x32x32 N256", "numbacnn", 0.010),
        _bench("vgg_small inference", "3x32x32 N256", "torch", 0.012),
        _bench("vgg_small inference", "3x32x32 N256", "onnxruntime", 0.011),
        _bench("vgg_small inference", "3x32x32 N1", "numbacnn", 0.003),
        _bench("vgg_small inference", "3x32x32 N1", "onnxruntime", 0.001),
        _bench("vgg_small train step", "3x32x32 N32", "numbacnn", 0.010),
        _bench("vgg_small train step", "3x32x32 N32", "torch", 0.013),
    ])
    # 0.012 / 0.010 = 1.2x torch misses 1.3x; 1.1x onnxruntime meets 1.0x.
    assert _line(text, "| vgg_small inference 3x32x32 N256 | cpu | 10.00 | 12.00 | -").endswith(
        ">=1.3x torch: MISS |")
    assert _line(text, "| vgg_small inference 3x32x32 N256 | cpu | 10.00 | 12.00 | 11.00").endswith(
        "| 1.20 | 1.10 | >=1.0x onnxruntime: ok |")
    # 3 ms against onnxruntime's 1 ms is more than twice its time.
    assert _line(text, "| vgg_small inference 3x32x32 N1 | cpu | 3.00 | - | 1.00").endswith(
        "<=2x onnxruntime's time: MISS |")
    assert _line(text, "| vgg_small train step 3x32x32 N32").endswith("| 1.30 | - | - | - | >=1.2x torch: ok |")


def test_memory_table_compares_the_steps_own_memory(tmp_path):
    mem = lambda mode, peer, delta, peak: _bench(  # noqa: E731
        "memory", f"lenet5 {mode} 1x28x28 N32", peer, 1.0, model="lenet5", mode=mode, delta_mb=delta,
        peak_mb=peak, baseline_mb=peak - delta, maxrss_mb=peak, method="VmHWM")
    text = _run(tmp_path, [mem("train", "numbacnn", 30.0, 200.0), mem("train", "torch", 20.0, 400.0),
                           mem("inference", "numbacnn", 10.0, 180.0), mem("inference", "torch", 40.0, 420.0)])
    # The ratio is of the deltas (30 / 20), not of the absolute peaks, and only training has a target.
    assert _line(text, "| lenet5 train 1x28x28 N32 |") == \
        "| lenet5 train 1x28x28 N32 | 30.0 | 20.0 | 1.50 | 200 | 400 | training step <= torch: MISS |"
    assert _line(text, "| lenet5 inference 1x28x28 N32 |") == \
        "| lenet5 inference 1x28x28 N32 | 10.0 | 40.0 | 0.25 | 180 | 420 |  |"
    assert "memory" not in _line(text, "| workload | device |")  # no timing row for the memory groups
    assert not [line for line in text.splitlines() if line.startswith("| memory ")]


def test_gpu_rows_divide_by_the_gpu_matmul_and_get_issue_18s_targets(tmp_path):
    gpu = lambda kind, workload, peer, median, flops=0: _bench(  # noqa: E731
        kind, workload, peer, median, device="cuda", flops=flops)
    text = _run(tmp_path, [
        _bench("matmul", "float32 2048x2048", "numpy", 0.1, flops=1e10),  # 100 GFLOP/s on the CPU
        gpu("matmul", "float32 8192x8192", "torch", 0.02, flops=1e12),  # 50,000 GFLOP/s on the GPU
        _bench("conv2d forward+backward", "N8-16x28x28-K32-k5-p2", "numbacnn", 0.001, flops=5e7),
        _bench("conv2d forward+backward", "N8-16x28x28-K32-k5-p2", "torch", 0.001),
        gpu("conv2d forward+backward", "N8-16x28x28-K32-k5-p2", "numbacnn", 0.0001, flops=5e8),
        gpu("conv2d forward+backward", "N8-16x28x28-K32-k5-p2", "torch", 0.00004),
        gpu("network3 train step", "1x28x28 N64", "numbacnn", 0.0010),
        gpu("network3 train step", "1x28x28 N64", "torch", 0.0011),
        gpu("network3 train step", "1x28x28 N10", "numbacnn", 0.0010),
        gpu("network3 train step", "1x28x28 N10", "torch", 0.0007),
    ])
    assert "GPU ceiling: PyTorch float32 8192x8192 matmul on CUDA (TF32 off) 50000 GFLOP/s" in text
    # 5,000 GFLOP/s is 10% of the GPU's matmul; the CPU row's 50 GFLOP/s is 50% of NumPy's.
    assert _line(text, "| conv2d forward+backward N8-16x28x28-K32-k5-p2 | cuda |").endswith(
        "| 0.40 | - | 5000.0 | 10% | >=0.5x torch (GPU): MISS |")
    assert "| 50.0 | 50% |" in _line(text, "| conv2d forward+backward N8-16x28x28-K32-k5-p2 | cpu |")
    assert _line(text, "| network3 train step 1x28x28 N64 | cuda |").endswith(">=1.0x torch (GPU): ok |")
    assert _line(text, "| network3 train step 1x28x28 N10 | cuda |").endswith("| 0.70 | - | - | - | >=0.8x torch (GPU): MISS |")


def test_the_report_says_when_two_threads_ran_no_faster_than_one(tmp_path):
    # The host sometimes runs a 2-CPU machine's CPUs on one core: the other-CPU share cannot
    # see it, so the run records how much faster two BLAS threads multiply than one, before and
    # after, and the report says which it was.
    bench = [_bench("lenet5 inference", "N1", "numbacnn", 1e-4)]
    path = tmp_path / "run.json"
    for speedups, verdict in (([1.98, 2.04], "ran as separate cores"), ([1.99, 1.58], "did not run as separate cores")):
        path.write_text(json.dumps({"datetime": "2026-12-05T00:00:00", "benchmarks": bench,
                                    "thread_speedup": speedups}))
        report = _report()
        line = _line(report.render(*report.load(path)), "2 threads ran a float32 matmul")
        assert f"{speedups[0]:.2f}x / {speedups[1]:.2f}x" in line and verdict in line
    path.write_text(json.dumps({"datetime": "2026-12-05T00:00:00", "benchmarks": bench}))
    assert "ran a float32 matmul" not in report.render(*report.load(path))  # older runs: no line
    assert report.thread_speedup(1) is None
    assert report.thread_speedup(2, seconds=0.05) > 0


def test_groups_timed_while_the_cpus_shared_a_core_are_marked(tmp_path):
    # Each timed row reads how much faster two BLAS threads multiply than one before and after
    # it (extra_info "cores"); a reading under 1.5x (two cores at least) marks the whole group,
    # in the PyTorch table and the onnxruntime one, and the header counts the marked groups.
    text = _run(tmp_path, [
        _bench("lenet5 inference", "1x28x28 N256", "numbacnn", 0.010, cores=[1.76, 1.18], cores_waited_s=3.0),
        _bench("lenet5 inference", "1x28x28 N256", "torch", 0.020, cores=[1.80, 1.79], cores_waited_s=0.0),
        _bench("lenet5 inference", "1x28x28 N256", "onnxruntime", 0.005, cores=[1.77, 1.78]),
        _bench("lenet5 train step", "1x28x28 N32", "numbacnn", 0.010, cores=[1.51, 1.74], cores_waited_s=40.0),
        _bench("lenet5 train step", "1x28x28 N32", "torch", 0.030, cores=[1.70, None]),
    ])
    assert _line(text, "| lenet5 inference 1x28x28 N256 | cpu | 10.00 | 20.00 | -").endswith(
        ">=1.3x torch: ok; shared core |")
    assert _line(text, "| lenet5 inference 1x28x28 N256 | cpu | 10.00 | 20.00 | 5.00").endswith(
        ">=1.0x onnxruntime: MISS; shared core |")
    assert _line(text, "| lenet5 train step 1x28x28 N32").endswith(">=1.2x torch: ok |")  # 1.51 >= 1.5
    line = _line(text, "Every timed row read the 2-thread matmul speedup")
    assert "1 of 2 groups had a row run while the CPUs shared a core" in line and "waited 43 s in all" in line
    plain = _run(tmp_path, [_bench("lenet5 inference", "1x28x28 N256", "numbacnn", 0.010)])
    assert "Every timed row" not in plain and "shared core" not in plain  # runs from before the readings


def test_the_quick_reading_and_the_wait_for_separate_cores():
    machine = _report().sys.modules["_machine"]
    assert machine.quick_speedup(1) is None
    assert machine.quick_speedup(2) > 0
    speedup, waited = machine.wait_for_cores(2, timeout_s=0.0)
    assert speedup > 0 and waited < 1.0  # no time to wait: one reading, whatever it says
    assert machine.shared_core({"threads": 2, "cores": [1.49, 1.9]})
    assert not machine.shared_core({"threads": 2, "cores": [1.5, None]})
    assert not machine.shared_core({"threads": 4, "cores": [1.6, 1.6]})  # two cores at least, whatever the threads
    assert not machine.shared_core({"cores": [1.0, 1.0]})  # no thread count: no verdict


def test_the_wait_reads_until_separate_cores_or_the_timeout(monkeypatch):
    machine = _report().sys.modules["_machine"]
    readings = iter([1.1, 1.2, 1.8, 1.1])
    monkeypatch.setattr(machine, "quick_speedup", lambda threads: next(readings))
    assert machine.wait_for_cores(2, timeout_s=60, poll_s=0)[0] == 1.8  # the third reading: separate
    readings = iter([1.1, 1.2, 1.3])
    speedup, waited = machine.wait_for_cores(2, timeout_s=0.05, poll_s=0.03)
    assert speedup in (1.2, 1.3) and 0.05 <= waited < 1  # out of time: the last reading
    readings = iter([1.1, 1.8])
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    assert machine.wait_for_cores(4, timeout_s=60, poll_s=0)[0] == 1.1  # more threads than CPUs: no wait
    readings = iter([1.1, 1.7])
    assert machine.after_reading(2, pause_s=0) == 1.7  # the better of two: spinning threads settle


def test_a_sessions_waits_stop_after_three_run_out_in_a_row(monkeypatch):
    machine = _report().sys.modules["_machine"]
    asked = []
    monkeypatch.setattr(machine, "wait_for_cores", lambda threads, wait: (asked.append(wait), (1.1, wait))[1])
    waits = machine.Waits(most=3)
    for _ in range(6):
        waits(2, 60.0)
    assert asked == [60.0, 60.0, 60.0, 0.0, 0.0, 0.0]  # a host that never reads as two cores
    monkeypatch.setattr(machine, "wait_for_cores", lambda threads, wait: (asked.append(wait), (1.8, 0.0))[1])
    waits, asked[:] = machine.Waits(most=3), []
    for _ in range(5):
        waits(2, 60.0)
    assert asked == [60.0] * 5  # separate cores each time: every row may wait


def test_every_timed_row_records_its_readings(tmp_path):
    # bench/conftest.py's fixture, through pytest itself: one timed row of the matmul file.
    import os
    import subprocess
    import sys

    out = tmp_path / "run.json"
    # Not this run's xdist variables: with them pytest-benchmark disables itself and writes no JSON.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(NUMBACNN_BENCH_WAIT_CORES="0", NUMBACNN_BENCH_THREADS="2")
    cmd = [sys.executable, "-m", "pytest", "bench/test_matmul.py", "-k", "numpy", "-q", "-p", "no:cacheprovider",
           "--benchmark-min-rounds=1", "--benchmark-max-time=0.01", "--benchmark-warmup=off", f"--benchmark-json={out}"]
    done = subprocess.run(cmd, cwd=REPORT.parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads(out.read_text())["benchmarks"]
    assert row["extra_info"]["peer"] == "numpy"
    assert len(row["extra_info"]["cores"]) == 2 and all(s > 0 for s in row["extra_info"]["cores"])
    assert row["extra_info"]["cores_waited_s"] >= 0


def test_rows_of_marked_groups_are_timed_again_in_place_of_their_first_times(tmp_path):
    report = _report()

    def row(kind, peer, median, cores, name):
        b = _bench(kind, "1x28x28 N32", peer, median, cores=cores)
        return dict(b, fullname=f"bench/test_x.py::test_{name}[{peer}]")

    first = {"datetime": "2026-12-07T00:00:00", "benchmarks": [
        row("lenet5 train step", "numbacnn", 0.012, [1.2, 1.7], "train"),  # shared: both peers again
        row("lenet5 train step", "torch", 0.030, [1.8, 1.8], "train"),
        row("lenet5 inference", "numbacnn", 0.001, [1.8, 1.7], "infer"),
        row("lenet5 inference", "torch", 0.002, [1.8, 1.7], "infer"),
        dict(row("memory", "numbacnn", 1.0, [1.0, 1.0], "memory"), extra_info=dict(  # another process's: never again
            kind="memory", device="cpu", workload="lenet5 train", peer="numbacnn", threads=2, cores=[1.0, 1.0],
            delta_mb=1.0, peak_mb=2.0, mode="train")),
    ]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(first))
    again = report.shared_rows(report.load(path)[1])
    assert again == ["bench/test_x.py::test_train[numbacnn]", "bench/test_x.py::test_train[torch]"]
    second = {"benchmarks": [row("lenet5 train step", "numbacnn", 0.010, [1.8, 1.8], "train"),
                             row("lenet5 train step", "torch", 0.031, [1.7, 1.8], "train")]}
    path.write_text(json.dumps(report.merge_again(first, second)))
    text = report.render(*report.load(path))
    assert _line(text, "| lenet5 train step 1x28x28 N32").startswith(
        "| lenet5 train step 1x28x28 N32 | cpu | 10.00 | 31.00 |")
    assert "shared core |" not in text
    line = _line(text, "Every timed row read")
    assert "0 of 2 groups" in line and "2 rows of groups so marked were timed again" in line  # memory not counted


def test_a_group_is_timed_again_whole_or_not_at_all(tmp_path):
    report = _report()

    def row(peer, median, name="infer"):
        b = _bench("lenet5 inference", "1x28x28 N32", peer, median, cores=[1.1, 1.7])
        return dict(b, fullname=f"bench/test_x.py::test_{name}[{peer}]")

    first = {"benchmarks": [row("numbacnn", 0.001), row("torch", 0.002)]}
    merged = report.merge_again(first, {"benchmarks": [row("numbacnn", 0.0005)]})  # torch's did not come back
    assert [b["stats"]["median"] for b in merged["benchmarks"]] == [0.001, 0.002] and merged["remeasured"] == []


def test_report_times_marked_groups_again_and_keeps_the_second_runs_status(tmp_path, monkeypatch):
    report = _report()
    calls = []

    def row(peer, median, cores):
        b = _bench("lenet5 inference", "1x28x28 N32", peer, median, cores=cores)
        return dict(b, fullname=f"bench/test_x.py::test_infer[{peer}]")

    def run_suite(path, threads, args, wait, tests=("bench",)):
        calls.append(tests)
        shared = len(calls) == 1
        rows = [row("numbacnn", 0.003 if shared else 0.001, [1.1 if shared else 1.8, 1.8]),
                row("torch", 0.002, [1.8, 1.8])]
        path.write_text(json.dumps({"datetime": "2026-12-07T00:00:00", "benchmarks": rows}))
        return (0 if shared else 3), 0.0

    monkeypatch.setattr(report, "run_suite", run_suite)
    monkeypatch.setattr(report, "thread_speedup", lambda threads: 2.0)
    stale = tmp_path / "run-again.json"
    stale.write_text(json.dumps({"benchmarks": []}))  # an earlier run's: never merged
    assert report.main(["--json", str(tmp_path / "run.json")]) == 3  # the second run's failure is the report's
    assert calls == [("bench",), ("bench/test_x.py::test_infer[numbacnn]", "bench/test_x.py::test_infer[torch]")]
    data = json.loads((tmp_path / "run.json").read_text())
    assert [b["stats"]["median"] for b in data["benchmarks"]] == [0.001, 0.002] and len(data["remeasured"]) == 2
