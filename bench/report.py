"""Run the benchmark suite and print the ratio table; optionally plot it.

    python bench/report.py --plot bench/results/ratios.png            # run, print, plot
    python bench/report.py --from-json bench/results/run.json         # print a saved run
    python bench/report.py --plot out.png -- -k conv2d                 # pass args to pytest

Ratios are read inside one run (never across runs): "x torch" is PyTorch's median time over
numbacnn's (above 1: numbacnn is faster; for a training step it is the images/s ratio), "x
NumPy" the same against the naive NumPy im2col + matmul, "GFLOP/s" numbacnn's achieved rate
and "% peak" that rate over NumPy's float32 2048x2048 matmul in the same run (a GPU row's over
PyTorch's float32 8192x8192 matmul on that GPU, TF32 off). Rates count a
direct convolution's multiply-adds, whatever the algorithm: Winograd convolutions do 2.8-4x
fewer, so theirs can pass 100%. The "target"
column checks the issue's goals. The plot needs matplotlib (``pip install numbacnn[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "bench") not in sys.path:  # run as a script or loaded from a path: _machine beside it
    sys.path.insert(0, str(REPO / "bench"))
from _cores import SHARED, group_key, merge_again, row_cores, shared, shared_rows  # noqa: E402,F401
from _machine import _contention, _sharing, run_suite, thread_speedup  # noqa: E402

# (kind, workload suffix or "", minimum x torch); the issue's "done when".
TORCH_TARGETS = [
    ("network3 train step", "N64", 1.2),
    ("network3 train step", "N10", 2.0),
    ("network3 inference", "N256", 1.2),
    ("network3 inference", "N1", 2.0),
    ("conv2d forward+backward", "", 0.8),
    ("conv1d forward+backward", "", 0.8),
    ("block forward+backward", "", 0.8),
    ("conv_transpose2d forward", "", 0.8),
    ("conv_transpose2d forward+backward", "", 0.8),
]
# The whole-model rows (test_models.py; bench/_zoo.py's MODELS) and issue 17's targets for them.
ZOO = ("lenet5", "network3", "vgg_small", "googlenet_mini", "resnet_bottleneck")
TORCH_TARGETS += [(f"{m} train step", "N32", 1.2) for m in ZOO] + [(f"{m} inference", "N256", 1.3) for m in ZOO]
# (kind, workload suffix, minimum x onnxruntime, label); at batch 1 "at most 2x its time".
ORT_TARGETS = [(f"{m} inference", "N256", 1.0, ">=1.0x onnxruntime") for m in ZOO] + \
              [(f"{m} inference", " N1", 0.5, "<=2x onnxruntime's time") for m in ZOO]
# Issue 18's GPU goals: (kind, workload suffix, minimum x torch), PyTorch on CUDA with cuDNN.
GPU_TARGETS = [
    ("network3 train step", "N64", 1.0),
    ("network3 train step", "N10", 0.8),
    ("conv2d forward+backward", "", 0.5),
]
MEMORY_TARGET = ("train", 1.0)  # a training step's own memory: at most PyTorch's
# (kind, workload suffix, most seconds numbacnn may take): per-call costs.
TIME_TARGETS = [("network3 inference", "N1", 0.15e-3)]
NUMPY_TARGET = ("conv2d forward", 5.0)
PEAK_TARGET = ("conv2d forward", 3, 0.60)  # the three largest shapes' forward: 60% of matmul
COLD_TARGET = ("numbacnn warm cache", 2.0)  # seconds to the end of the first step


def load(json_path: Path) -> tuple[dict[str, Any], dict[tuple[str, str, str], dict[str, Any]]]:
    """The run's header and {(kind, device, workload): {peer: benchmark}}."""
    data = json.loads(json_path.read_text())
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for b in data["benchmarks"]:
        if "peer" in b.get("extra_info", {}):
            groups.setdefault(group_key(b), {})[b["extra_info"]["peer"]] = b
    return data, groups


STAT = "median"  # the statistic read off each benchmark (--stat)


def _median(b: dict[str, Any] | None) -> float | None:
    return None if b is None else b["stats"][STAT]


def _ratio(peer: float | None, ours: float | None) -> float | None:
    return None if peer is None or ours is None or ours <= 0 else peer / ours


def ceiling(groups: dict, device: str = "cpu") -> tuple[float | None, float | None]:
    """GFLOP/s of NumPy's and PyTorch's matmul on ``device`` (on "cuda" only PyTorch's runs)."""
    peers = next((v for (k, d, _), v in groups.items() if k == "matmul" and d == device), {})
    rates = []
    for name in ("numpy", "torch"):
        b = peers.get(name)
        rates.append(b["extra_info"]["flops"] / _median(b) / 1e9 if b else None)
    return rates[0], rates[1]


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def rows(groups: dict, peak: float | None) -> list[dict[str, Any]]:
    """One dict per workload; "peak" is its GFLOP/s over ``peak`` (cpu) or over PyTorch's matmul
    on the GPU in the same run (cuda)."""
    gpu_peak = ceiling(groups, "cuda")[1]
    out = []
    for (kind, device, workload), peers in groups.items():
        if kind in ("matmul", "cold start", "memory"):
            continue
        ours = peers.get("numbacnn")
        t_ours = _median(ours)
        gflops = ours["extra_info"]["flops"] / t_ours / 1e9 if ours and t_ours and ours["extra_info"]["flops"] else None
        out.append(dict(kind=kind, device=device, workload=workload, ours=t_ours,
                        torch=_median(peers.get("torch")), numpy=_median(peers.get("numpy")),
                        x_torch=_ratio(_median(peers.get("torch")), t_ours),
                        x_numpy=_ratio(_median(peers.get("numpy")), t_ours), gflops=gflops,
                        x_ort=_ratio(_median(peers.get("onnxruntime")), t_ours),
                        peak=_ratio(gflops, peak if device == "cpu" else gpu_peak) if gflops else None,
                        flops=ours["extra_info"]["flops"] if ours else 0, target=[], shared=shared(peers)))
    for r in out:
        for kind, suffix, want in TORCH_TARGETS:
            if r["kind"] == kind and r["workload"].endswith(suffix) and r["device"] == "cpu":
                r["target"].append(_check(r["x_torch"], want, f">={want}x torch"))
        for kind, suffix, want in GPU_TARGETS:
            if r["kind"] == kind and r["workload"].endswith(suffix) and r["device"] == "cuda":
                r["target"].append(_check(r["x_torch"], want, f">={want}x torch (GPU)"))
        for kind, suffix, most in TIME_TARGETS:
            if r["kind"] == kind and r["workload"].endswith(suffix) and r["device"] == "cpu":
                ok = "?" if r["ours"] is None else "ok" if r["ours"] <= most else "MISS"
                r["target"].append(f"<={most * 1e3:g} ms: {ok}")
        if r["kind"] == NUMPY_TARGET[0] and r["device"] == "cpu":
            r["target"].append(_check(r["x_numpy"], NUMPY_TARGET[1], f">={NUMPY_TARGET[1]:g}x NumPy"))
    kind, n, frac = PEAK_TARGET
    largest = sorted((r for r in out if r["kind"] == kind and r["device"] == "cpu"), key=lambda r: -r["flops"])[:n]
    for r in largest:
        r["target"].append(_check(r["peak"], frac, f">={frac:.0%} peak"))
    for r in out:
        r["target"] += [SHARED] if r["shared"] else []
    return out


def _check(value: float | None, want: float, what: str) -> str:
    return f"{what}: " + ("?" if value is None else "ok" if value >= want else "MISS")


def cold_rows(groups: dict) -> list[tuple[str, float, float]]:
    peers = next((v for (k, _, _), v in groups.items() if k == "cold start"), {})
    return [(name, b["extra_info"].get("to_first_step_s", b["stats"]["median"]), b["stats"]["median"])
            for name, b in peers.items()]


def _versions() -> str:
    parts = []
    for dist in ("numbacnn", "numba", "numpy", "torch", "onnxruntime"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def render(data: dict[str, Any], groups: dict) -> str:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    threads = next((b["extra_info"].get("threads") for b in data["benchmarks"] if "threads" in b.get("extra_info", {})), "?")
    np_peak, torch_peak = ceiling(groups)
    lines = [
        f"Run: {data.get('datetime', '?')[:19]} UTC on {cpu.get('brand_raw', '?')} "
        f"({cpu.get('count', '?')} cores), {threads} threads per engine; {data.get('versions') or _versions()}",
        f"Machine ceiling: NumPy float32 2048x2048 matmul {_fmt(np_peak, '.1f')} GFLOP/s "
        f"(PyTorch {_fmt(torch_peak, '.1f')} GFLOP/s); times are the {STAT} of each benchmark's rounds; "
        "GFLOP/s count a direct convolution's work (Winograd does less, so it can pass 100%)",
        *gpu_line(groups),
        _contention(data.get("other_cpu_share")),
        *filter(None, [_sharing(data.get("thread_speedup"), threads)]),
        *row_cores(groups, data.get("remeasured", []), threads),
        "",
        "| workload | device | numbacnn ms | PyTorch ms | naive NumPy ms | x torch | x NumPy | GFLOP/s | % peak | target |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows(groups, np_peak):
        ms = lambda t: _fmt(None if t is None else t * 1e3, ".2f")
        lines.append(
            f"| {r['kind']} {r['workload']} | {r['device']} | {ms(r['ours'])} | {ms(r['torch'])} | {ms(r['numpy'])} "
            f"| {_fmt(r['x_torch'], '.2f')} | {_fmt(r['x_numpy'], '.2f')} | {_fmt(r['gflops'], '.1f')} "
            f"| {_fmt(None if r['peak'] is None else 100 * r['peak'], '.0f', '%')} | {'; '.join(r['target'])} |")
    fwd = [r for r in rows(groups, np_peak) if r["kind"] == NUMPY_TARGET[0] and r["torch"] and r["numpy"]]
    if fwd:
        # The peer a user would pick, held to the same bar: how far the naive forward target is
        # reachable at all on this machine.
        vs = [r["numpy"] / r["torch"] for r in fwd]
        met = sum(v >= NUMPY_TARGET[1] for v in vs)
        lines += ["", f"PyTorch against the naive NumPy forward in this run: {min(vs):.2f}x to {max(vs):.2f}x "
                      f"(>= {NUMPY_TARGET[1]:g}x on {met} of {len(vs)} shapes)."]
    lines += onnx_lines(groups)
    lines += memory_lines(groups)
    cold = cold_rows(groups)
    if cold:
        lines += ["", "| cold start: network3, fresh process to end of first training step (N64) | seconds "
                      "| whole process s | target |", "|---|--:|--:|---|"]
        for name, first, whole in cold:
            target = ""
            if name == COLD_TARGET[0]:
                target = f"<={COLD_TARGET[1]:g} s: " + ("ok" if first <= COLD_TARGET[1] else "MISS")
            lines.append(f"| {name} | {first:.2f} | {whole:.2f} | {target} |")
    return "\n".join(lines)


def gpu_line(groups: dict) -> list[str]:
    """The GPU ceiling the cuda rows' "% peak" divides by, when the run had GPU rows."""
    if not any(d == "cuda" for (_, d, _) in groups):
        return []
    return [f"GPU ceiling: PyTorch float32 8192x8192 matmul on CUDA (TF32 off) {_fmt(ceiling(groups, 'cuda')[1], '.0f')} "
            "GFLOP/s; the cuda rows' % peak is over it"]


def onnx_lines(groups: dict) -> list[str]:
    """Workloads with an onnxruntime peer (an imported ONNX model): its column beside PyTorch's."""
    found = [(key, peers) for key, peers in groups.items() if "onnxruntime" in peers]
    if not found:
        return []
    ms = lambda t: _fmt(None if t is None else t * 1e3, ".2f")
    lines = ["", "| workload (onnxruntime runs the same ONNX file) | device | numbacnn ms | PyTorch ms "
                 "| onnxruntime ms | x torch | x onnxruntime | target |", "|---|---|--:|--:|--:|--:|--:|---|"]
    for (kind, device, workload), peers in found:
        ours, torch, rt = (_median(peers.get(p)) for p in ("numbacnn", "torch", "onnxruntime"))
        x_rt = _ratio(rt, ours)
        target = [_check(x_rt, want, what) for k, suffix, want, what in ORT_TARGETS
                  if kind == k and workload.endswith(suffix) and device == "cpu"] + ([SHARED] if shared(peers) else [])
        lines.append(f"| {kind} {workload} | {device} | {ms(ours)} | {ms(torch)} | {ms(rt)} "
                     f"| {_fmt(_ratio(torch, ours), '.2f')} | {_fmt(x_rt, '.2f')} | {'; '.join(target)} |")
    return lines


def memory_lines(groups: dict) -> list[str]:
    """The memory table: each (model, mode)'s step memory in numbacnn and PyTorch (test_models_memory)."""
    found = [(workload, peers) for (kind, _, workload), peers in groups.items() if kind == "memory"]
    if not found:
        return []
    lines = ["", "| peak resident memory (median of fresh processes; MB the step itself needed, above the resident "
                 "size after warm-up) | numbacnn MB | PyTorch MB | numbacnn / torch | numbacnn peak MB "
                 "| PyTorch peak MB | target |", "|---|--:|--:|--:|--:|--:|---|"]
    for workload, peers in sorted(found):
        info = {p: peers[p]["extra_info"] for p in ("numbacnn", "torch") if p in peers}
        ours, torch = (info[p]["delta_mb"] if p in info else None for p in ("numbacnn", "torch"))
        ratio = None if ours is None or not torch else ours / torch
        target = ""
        if info and next(iter(info.values())).get("mode") == MEMORY_TARGET[0]:
            ok = "?" if ratio is None else "ok" if ratio <= MEMORY_TARGET[1] else "MISS"
            target = f"training step <= torch: {ok}"
        peak = lambda p: _fmt(info[p]["peak_mb"] if p in info else None, ".0f")
        lines.append(f"| {workload} | {_fmt(ours, '.1f')} | {_fmt(torch, '.1f')} | {_fmt(ratio, '.2f')} "
                     f"| {peak('numbacnn')} | {peak('torch')} | {target} |")
    method = {b["extra_info"].get("method") for peers in dict(found).values() for b in peers.values()}
    lines.append(f"(peak read from {', '.join(sorted(m for m in method if m))}; the absolute peaks include each "
                 "engine's libraries and the model, so the first two columns are the ones to compare)")
    return lines


def plot(groups: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install 'numbacnn[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    np_peak, _ = ceiling(groups)
    table = [r for r in rows(groups, np_peak) if r["x_torch"] is not None]
    convs = [r for r in rows(groups, np_peak) if r["kind"] == "conv2d forward" and r["gflops"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, max(5.0, 0.32 * len(table) + 1.5)),
                                   gridspec_kw={"width_ratios": [3, 2]})
    labels = [f"{r['kind']} {r['workload']} [{r['device']}]" for r in table]
    values = [r["x_torch"] for r in table]
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    ax1.barh(range(len(table)), values, color=colors)
    ax1.set_yticks(range(len(table)), labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ort = [(i, r["x_ort"]) for i, r in enumerate(table) if r.get("x_ort")]
    if ort:
        ax1.scatter([v for _, v in ort], [i for i, _ in ort], color="tab:purple", marker="D", s=14, zorder=3,
                    label="vs onnxruntime (its time / numbacnn time)")
        ax1.legend(fontsize=7, loc="lower right")
        values = values + [v for _, v in ort]
    ticks = [t for t in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
             if min(values) / 2 <= t <= max(values) * 2]
    ax1.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax1.minorticks_off()
    ax1.axvline(1.0, color="black", lw=1)
    for i, r in enumerate(table):
        for kind, suffix, want in TORCH_TARGETS:
            if r["kind"] == kind and r["workload"].endswith(suffix) and r["device"] == "cpu":
                ax1.plot([want, want], [i - 0.4, i + 0.4], color="black", ls=":", lw=1.5)
    ax1.set_xlabel("speed vs PyTorch (PyTorch time / numbacnn time; > 1 is faster; dotted: target)")
    ax2.barh(range(len(convs)), [r["gflops"] for r in convs], color="tab:blue", label="numbacnn")
    ax2.scatter([r["flops"] / r["torch"] / 1e9 if r["torch"] else 0 for r in convs], range(len(convs)),
                color="tab:orange", zorder=3, label="PyTorch")
    ax2.scatter([r["flops"] / r["numpy"] / 1e9 if r["numpy"] else 0 for r in convs], range(len(convs)),
                color="gray", marker="x", zorder=3, label="naive NumPy")
    if np_peak:
        ax2.axvline(np_peak, color="black", ls="--", lw=1, label="NumPy matmul (ceiling)")
        ax2.axvline(0.6 * np_peak, color="black", ls=":", lw=1, label="60% of ceiling")
    ax2.set_yticks(range(len(convs)), [r["workload"] for r in convs], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("conv2d forward GFLOP/s (cpu)")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", type=Path, help="write the plot (PNG, SVG, PDF by suffix) here")
    parser.add_argument("--json", type=Path, help="keep the pytest-benchmark JSON here")
    parser.add_argument("--from-json", type=Path, help="report on a saved run instead of running the suite")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("NUMBACNN_BENCH_THREADS", "2")),
                        help="threads per engine (default 2)")
    parser.add_argument("--stat", choices=("median", "min", "mean"), default="median",
                        help="the statistic compared (default median; min resists load from other jobs)")
    parser.add_argument("--wait-cores", type=float, default=60.0, metavar="SECONDS",
                        help="the most each timed row waits for the CPUs to run as separate cores (default 60)")
    parser.add_argument("--no-again", dest="again", action="store_false",
                        help="leave the groups marked shared core (default: time their rows again at the end)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)
    global STAT
    STAT = args.stat
    rc = 0
    if args.from_json:
        json_path = args.from_json
    else:
        json_path = args.json or Path(tempfile.mkdtemp(prefix="numbacnn-bench-")) / "run.json"
        before = thread_speedup(args.threads)
        rc, share = run_suite(json_path, args.threads, args.pytest_args, args.wait_cores)
        again = shared_rows(load(json_path)[1]) if args.again and json_path.exists() else []
        again_path = json_path.with_name(json_path.stem + "-again.json")
        again_path.unlink(missing_ok=True)  # never an earlier run's
        if again:  # rows timed while the CPUs shared a core: once more, in place of their first times
            rc = run_suite(again_path, args.threads, args.pytest_args, args.wait_cores, tuple(again))[0] or rc
        after = thread_speedup(args.threads)
        if json_path.exists():
            data = json.loads(json_path.read_text())
            if again_path.exists():
                data = merge_again(data, json.loads(again_path.read_text()))
            data.update(other_cpu_share=share, versions=_versions(), thread_speedup=[before, after])
            json_path.write_text(json.dumps(data, indent=1))
        if not json_path.exists():
            print("pytest wrote no benchmark JSON", file=sys.stderr)
            return rc or 1
    data, groups = load(json_path)
    print(render(data, groups))
    if args.plot:
        plot(groups, args.plot)
    return rc


if __name__ == "__main__":
    sys.exit(main())
