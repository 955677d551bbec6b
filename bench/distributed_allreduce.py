"""The cost of data-parallel training: one step's gradient allreduce against its compute.

    mpiexec -n 2 python -m mpi4py bench/distributed_allreduce.py [--batch 64] [--steps 30]

Each rank runs network3's training step (``nc.zoo.network3()``, conv2_relu, 1x28x28, batch 64
per rank by default) on its own random batch: forward, cross-entropy, backward (the compute),
then ``GradientAverager.average()`` (one in-place ``Allreduce`` per bucket, a slice of the
model's flat gradient on the CPU: the communication), then the SGD step. Medians over ``--steps`` steps
after two warm-up steps (compilation), of the slowest rank; the average is timed again back to
back, where no rank arrives late from its compute (on a busy machine a rank descheduled during
the step makes the in-step figure mostly waiting). Then it measures this machine's allreduce latency (8
bytes) and bandwidth (the gradient's bytes), and prints the ring-allreduce model

    T(N) = 2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * latency

for N machines on 10 and 100 Gbit/s networks, against the measured compute (which does not
change with N: each rank keeps its batch). Ranks on one machine talk through shared memory,
so the measured allreduce here is a floor, not a network figure. Set ``NUMBA_NUM_THREADS`` to
the cores per rank (1 each for 2 ranks on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from mpi4py import MPI

import numbacnn as nc
import numbacnn.distributed as dist

NETWORKS = {"10 Gbit/s Ethernet (TCP)": (10e9 / 8, 25e-6), "100 Gbit/s (RDMA: InfiniBand / RoCE)": (100e9 / 8, 3e-6)}
MACHINES = (2, 4, 8, 16, 32, 64, 128)


def ring_allreduce_seconds(nbytes: int, n: int, bandwidth: float, latency: float) -> float:
    """Reduce-scatter then allgather around a ring: 2 (N - 1) messages of bytes / N each."""
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def _median_time(fn, repeats: int) -> float:
    comm = dist.init()
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64, help="per rank (default 64)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--json", help="also write the figures here (rank 0)")
    args = p.parse_args()
    comm = dist.init()
    rng = np.random.default_rng(dist.rank())
    x = rng.standard_normal((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    model = nc.zoo.network3(seed=0)
    opt = nc.optim.SGD(model, lr=0.01, momentum=0.9)
    averager = dist.GradientAverager(model)

    def compute() -> None:
        opt.zero_grad()
        out = model.forward(x, training=True, host=False)
        model.backward(nc.losses.cross_entropy(out, y)[1], input_grad=False)

    compute_s, reduce_s, step_s = [], [], []
    for i in range(args.steps + 2):
        comm.Barrier()  # every rank starts the step together: the allreduce times no straggler
        t0 = time.perf_counter()
        compute()
        t1 = time.perf_counter()
        comm.Barrier()
        t2 = time.perf_counter()
        averager.average()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= 2:
            compute_s.append(t1 - t0)
            reduce_s.append(t3 - t2)
            step_s.append(t4 - t3)
    nbytes = averager.nbytes
    bucket = averager.buffers[0]
    alone = _median_time(averager.average, 50)  # back to back: no straggler from the compute
    raw = _median_time(lambda: comm.Allreduce(MPI.IN_PLACE, bucket), 50)
    tiny = np.zeros(1, np.float64)
    latency = _median_time(lambda: comm.Allreduce(MPI.IN_PLACE, tiny), 200)
    # Every rank's figures: the slowest rank sets the pace.
    mine = np.array([statistics.median(compute_s), statistics.median(reduce_s), statistics.median(step_s), alone,
                     raw, latency])
    worst = dist.allreduce(mine.copy(), "max")
    if not dist.is_root():
        return
    n = dist.size()
    compute_t, reduce_t, step_t, alone_t, raw_t, lat_t = worst
    print(f"network3 ({model.param_count():,} parameters, {nbytes / 1e6:.3f} MB of float32 gradient in "
          f"{len(averager.buffers)} bucket(s)), batch {args.batch} per rank, {n} ranks on this machine, "
          f"numba threads per rank: {__import__('numba').get_num_threads()}")
    print(f"  compute (forward + loss + backward) {compute_t * 1e3:8.2f} ms")
    print(f"  gradient average (copies + Allreduce) {reduce_t * 1e3:6.3f} ms = {reduce_t / compute_t:.1%} of compute")
    print(f"    the same, back to back            {alone_t * 1e3:6.3f} ms = {alone_t / compute_t:.1%} of compute")
    print(f"    of which Allreduce                {raw_t * 1e3:6.3f} ms "
          f"({2 * (n - 1) / n * nbytes / raw_t / 1e9:.2f} GB/s bus bandwidth)")
    print(f"  SGD step                            {step_t * 1e3:6.3f} ms")
    print(f"  8-byte Allreduce latency            {lat_t * 1e6:6.1f} us")
    print("\nring-allreduce model T(N) = 2(N-1)/N * bytes/bandwidth + 2(N-1) * latency, "
          f"bytes = {nbytes:,}; compute {compute_t * 1e3:.2f} ms per step stays as N grows")
    rows = {}
    for name, (bw, lat) in NETWORKS.items():
        cells = []
        for m in MACHINES:
            t = ring_allreduce_seconds(nbytes, m, bw, lat)
            cells.append(f"N={m}: {t * 1e3:.3f} ms ({t / compute_t:.1%})")
            rows.setdefault(name, {})[m] = t
        print(f"  {name}, latency {lat * 1e6:.0f} us: " + "; ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": n, "batch": args.batch, "bytes": nbytes, "compute_s": compute_t,
                       "average_s": reduce_t, "average_back_to_back_s": alone_t, "allreduce_s": raw_t, "step_s": step_t, "latency_s": lat_t,
                       "model": {k: {str(m): t for m, t in v.items()} for k, v in rows.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
