"""Run a ``DistributedCost`` plan for real: one process per device, torch.distributed (gloo over 127.0.0.1).

This is a functional check of the plan (the output must equal the single-process output) with an informative
timing; on a 2-core machine timings are coarse (reference/costs_and_peers.md section 5). Execution needs to know
how a node combines its inputs, so it supports spaces shaped like the CNF: ``stem`` (source node),
``node`` (combines the list of incoming block outputs), ``classifier`` on the sink, ``incoming`` order, and
every graph edge gated.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .blocks import GATE_ON, block_shapes, choice_modules

__all__ = ["run_plan", "eager_block_ms", "calibrate_link"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, port: int, pin: bool = False) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    # Pinning helps on an idle machine; on a shared 2-core box it made gloo's one-way latency 1.8 ms vs 0.05 ms.
    if pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= world:
        os.sched_setaffinity(0, {rank % (os.cpu_count() or 1)})
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def eager_block_ms(space: Any, input_shape: Sequence[int], runs: int = 20) -> tuple[dict[str, float], float]:
    """Median torch-eager time (ms, 1 thread) of each gated block at its input shape, and of the fixed part
    (the whole model with every gate off): weights for a plan executed with torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        labels = space.graph.labels
        model = space.freeze({label: GATE_ON for label in labels}).eval()
        paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
        shapes = block_shapes(model, list(paths.values()), torch.zeros(*input_shape))

        def timed(fn: Any, x: torch.Tensor) -> float:
            with torch.no_grad():
                for _ in range(3):
                    fn(x)
                ts = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    fn(x)
                    ts.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(ts)

        per_gate = {
            label: timed(model.get_submodule(paths[label]), torch.randn(*shapes[paths[label]][0]))
            for label in labels
        }
        off = space.freeze({label: "off" for label in labels}).eval()
        return per_gate, timed(off, torch.randn(*input_shape))
    finally:
        torch.set_num_threads(threads)


def _worker(rank: int, world: int, port: int, job: dict[str, Any], queue: Any) -> None:
    import torch.distributed as dist

    _init(rank, world, port, job["pin"])
    model, x, dag, items, device = job["model"], job["x"], job["dag"], job["items"], job["device"]
    shapes, inputs_of, kind = job["shapes"], job["inputs_of"], job["kind"]
    modules = job["modules"]
    live = set(device)
    consumers = {
        v: sorted({device[s] for s in dag.succs[v] if s in live and device[s] != device[v]}) for v in live
    }
    times, out = [], None
    for rep in range(job["repeats"] + 3):
        values: dict[int, torch.Tensor] = {}
        pending = []
        dist.barrier()
        t0 = time.perf_counter()
        with torch.no_grad():
            for v in items[rank]:
                args = []
                for p in inputs_of[v]:
                    if p not in values:
                        buf = torch.empty(shapes[p])
                        dist.recv(buf, src=device[p], tag=p)
                        values[p] = buf
                    args.append(values[p])
                if kind[v] == "source":
                    y = model.stem(x)
                elif kind[v] == "node":
                    y = model.node(args)
                elif kind[v] == "gate":
                    y = modules[v](args[0])
                else:
                    y = model.classifier(args[0]).view(-1, model.num_classes)
                values[v] = y
                for d in consumers[v]:
                    pending.append(dist.isend(y.contiguous(), dst=d, tag=v))
            for h in pending:
                h.wait()
        elapsed = torch.tensor([time.perf_counter() - t0])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if rep >= 3:
            times.append(float(elapsed) * 1e3)
        if dag.output in values:
            out = values[dag.output]
    dist.barrier()
    if out is not None:
        queue.put(("out", out.numpy()))
    if rank == 0:
        queue.put(("times", times))
    dist.destroy_process_group()


def run_plan(
    space: Any,
    arch: Mapping[str, Any],
    cost: Any,
    input_shape: Sequence[int],
    repeats: int = 5,
    seed: int = 0,
    pin: bool = False,
) -> dict[str, Any]:
    """Execute ``cost.plan(arch)`` with one process per device and compare with the single-process model.

    ``cost`` is a bound ``DistributedCost`` (time mode). Returns the max abs output difference, the measured
    wall time (median over ``repeats``, slowest rank, ms), the modelled makespan and the single-process time.
    """
    for attr in ("stem", "node", "classifier", "incoming"):
        if not hasattr(space, attr):
            raise TypeError(f"run_plan supports CNF-like spaces (needs space.{attr})")
    if any(label is None for _, _, label in space.graph.edges):
        raise TypeError("run_plan supports spaces whose graph edges are all gated")
    arch = space.prune(arch)
    plan = cost.plan(arch)
    dag = cost.dag
    index = {name: v for v, name in enumerate(dag.names)}
    device = {index[n]: d for n, d in plan.device.items()}
    world = cost.devices
    items = [[index[n] for n in plan.order if plan.device[n] == r] for r in range(world)]
    model = space.freeze(arch).eval()
    torch.manual_seed(seed)
    x = torch.randn(*input_shape)
    paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
    key_of = {i: key for key, i in space.graph.nodes.items()}
    kind, inputs_of, modules = {}, {}, {}
    for v in device:
        if dag.kind[v] == "gate":
            kind[v], inputs_of[v] = "gate", [p for p in dag.preds[v] if p in device]
            modules[v] = model.get_submodule(paths[dag.names[v]])
        elif dag.kind[v] == "output":
            kind[v], inputs_of[v] = "output", list(dag.preds[v])
        else:
            node = next(i for i, item in dag.node_item.items() if item == v)
            if node == space.graph.source:
                kind[v], inputs_of[v] = "source", []
            else:
                order = [dag.gate_item[label] for _, label in space.incoming[key_of[node]]]
                kind[v], inputs_of[v] = "node", [p for p in order if p in device]
    # Activation shapes of every live item, from one single-process run with hooks.
    with torch.no_grad():
        ref = model(x)
    gate_shapes = block_shapes(model, [paths[dag.names[v]] for v in device if kind[v] == "gate"], x)
    shapes = {}
    for v in device:
        if kind[v] == "gate":
            shapes[v] = gate_shapes[paths[dag.names[v]]][1]
    for v in device:
        if kind[v] in ("node", "source"):
            succ = [s for s in dag.succs[v] if s in device]
            shapes[v] = (
                gate_shapes[paths[dag.names[succ[0]]]][0]
                if succ and kind[succ[0]] == "gate"
                else tuple(model.stem(x).shape)
                if kind[v] == "source"
                else shapes[inputs_of[v][0]]
            )
    job = {
        "model": model,
        "x": x,
        "dag": dag,
        "items": items,
        "device": device,
        "shapes": shapes,
        "inputs_of": inputs_of,
        "kind": kind,
        "modules": modules,
        "repeats": repeats,
        "pin": pin,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        single = []
        for _ in range(5 + 4 * repeats):
            t0 = time.perf_counter()
            model(x)
            single.append((time.perf_counter() - t0) * 1e3)
    torch.set_num_threads(threads)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, job, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in range(2))
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"run_plan: a worker failed (exit codes {[p.exitcode for p in procs]})")
    out = torch.from_numpy(results["out"])
    return {
        "max_abs_diff": float((out - ref).abs().max()),
        "measured_ms": statistics.median(results["times"]),
        "modelled_ms": plan.makespan,
        "single_process_ms": statistics.median(single[5:]),
        "devices_used": sorted(set(device.values())),
        "transfers": len(plan.transfers),
    }


def _pingpong(rank: int, port: int, sizes: Sequence[int], reps: int, queue: Any) -> None:
    import torch.distributed as dist

    _init(rank, 2, port)
    result = {}
    for n in sizes:
        buf = torch.zeros(max(1, n // 4))
        ts = []
        for i in range(reps + 3):
            dist.barrier()
            t0 = time.perf_counter()
            if rank == 0:
                dist.send(buf, 1)
                dist.recv(buf, 1)
            else:
                dist.recv(buf, 0)
                dist.send(buf, 0)
            if i >= 3:
                ts.append((time.perf_counter() - t0) * 1e3 / 2)
        result[n] = statistics.median(ts)
    if rank == 0:
        queue.put(result)
    dist.destroy_process_group()


def calibrate_link(sizes: Sequence[int] = (4096, 65536, 524288, 4194304), reps: int = 20) -> dict[str, float]:
    """Gloo ping-pong between two local processes; least-squares fit of one-way time = latency + bytes / bw.

    Returns ``{'latency_ms', 'bandwidth_bytes_per_ms', 'one_way_ms': {bytes: ms}}`` for ``DistributedCost``.
    """
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_pingpong, args=(r, port, sizes, reps, queue)) for r in range(2)]
    for p in procs:
        p.start()
    one_way = queue.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    xs, ys = list(one_way), [one_way[n] for n in one_way]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    return {
        "latency_ms": max(0.0, my - slope * mx),
        "bandwidth_bytes_per_ms": 1.0 / slope if slope > 0 else 1e12,
        "one_way_ms": one_way,
    }
