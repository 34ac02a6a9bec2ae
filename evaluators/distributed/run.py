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

from evaluators.blocks import GATE_OFF, all_gates, block_shapes, choice_modules

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


def _median_ms(fn: Any, x: torch.Tensor, warmup: int, runs: int) -> float:
    """Median wall time (ms) of ``runs`` calls ``fn(x)`` without autograd, after ``warmup`` untimed calls."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def eager_block_ms(space: Any, input_shape: Sequence[int], runs: int = 20) -> tuple[dict[str, float], float]:
    """Median torch-eager time (ms, 1 thread) of each gated block at its input shape, and of the fixed part
    (the whole model with every gate off): weights for a plan executed with torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = space.freeze(all_gates(space)).eval()
        paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
        shapes = block_shapes(model, list(paths.values()), torch.zeros(*input_shape))
        per_gate = {
            label: _median_ms(
                model.get_submodule(paths[label]), torch.randn(*shapes[paths[label]][0]), 3, runs
            )
            for label in space.graph.labels
        }
        off = space.freeze(all_gates(space, GATE_OFF)).eval()
        return per_gate, _median_ms(off, torch.randn(*input_shape), 3, runs)
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


def _spawn(target: Any, world: int, args: tuple, results: int) -> tuple[list[Any], list[int | None]]:
    """Run ``target(rank, world, port, *args, queue)`` in ``world`` forked processes that meet over gloo on a free
    local port; returns the first ``results`` items they put on the queue, and their exit codes."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    items = [queue.get(timeout=300) for _ in range(results)]
    for p in procs:
        p.join(timeout=60)
    return items, [p.exitcode for p in procs]


def _item_roles(space: Any, dag: Any, live: Mapping[int, int], model: Any) -> tuple[dict, dict, dict]:
    """For every live item: its kind (source, node, gate, output), the live items it reads in the order the
    space combines them, and for a gate its module in ``model``."""
    paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
    key_of = {i: key for key, i in space.graph.nodes.items()}
    kind, inputs_of, modules = {}, {}, {}
    for v in live:
        if dag.kind[v] == "gate":
            kind[v], inputs_of[v] = "gate", [p for p in dag.preds[v] if p in live]
            modules[v] = model.get_submodule(paths[dag.names[v]])
        elif dag.kind[v] == "output":
            kind[v], inputs_of[v] = "output", list(dag.preds[v])
        else:
            node = next(i for i, item in dag.node_item.items() if item == v)
            if node == space.graph.source:
                kind[v], inputs_of[v] = "source", []
            else:
                order = [dag.gate_item[label] for _, label in space.incoming[key_of[node]]]
                kind[v], inputs_of[v] = "node", [p for p in order if p in live]
    return kind, inputs_of, modules


def _item_shapes(space: Any, dag: Any, model: Any, x: torch.Tensor, kind: dict, inputs_of: dict) -> dict:
    """Activation shape of every live item, from one single-process run with hooks."""
    paths = {label: mods[0][0] for label, mods in choice_modules(space).items()}
    gate_shapes = block_shapes(model, [paths[dag.names[v]] for v in kind if kind[v] == "gate"], x)
    shapes = {}
    for v in kind:
        if kind[v] == "gate":
            shapes[v] = gate_shapes[paths[dag.names[v]]][1]
    for v in kind:
        if kind[v] in ("node", "source"):
            succ = [s for s in dag.succs[v] if s in kind]
            shapes[v] = (
                gate_shapes[paths[dag.names[succ[0]]]][0]
                if succ and kind[succ[0]] == "gate"
                else tuple(model.stem(x).shape)
                if kind[v] == "source"
                else shapes[inputs_of[v][0]]
            )
    return shapes


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
    plan, dag, world = cost.plan(arch), cost.dag, cost.devices
    index = {name: v for v, name in enumerate(dag.names)}
    device = {index[n]: d for n, d in plan.device.items()}
    model = space.freeze(arch).eval()
    torch.manual_seed(seed)
    x = torch.randn(*input_shape)
    kind, inputs_of, modules = _item_roles(space, dag, device, model)
    with torch.no_grad():
        ref = model(x)
    job = {
        "model": model,
        "x": x,
        "dag": dag,
        "items": [[index[n] for n in plan.order if plan.device[n] == r] for r in range(world)],
        "device": device,
        "shapes": _item_shapes(space, dag, model, x, kind, inputs_of),
        "inputs_of": inputs_of,
        "kind": kind,
        "modules": modules,
        "repeats": repeats,
        "pin": pin,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    single_ms = _median_ms(model, x, 5, 4 * repeats)
    torch.set_num_threads(threads)
    items, exit_codes = _spawn(_worker, world, (job,), results=2)
    if any(code != 0 for code in exit_codes):
        raise RuntimeError(f"run_plan: a worker failed (exit codes {exit_codes})")
    results = dict(items)
    out = torch.from_numpy(results["out"])
    return {
        "max_abs_diff": float((out - ref).abs().max()),
        "measured_ms": statistics.median(results["times"]),
        "modelled_ms": plan.makespan,
        "single_process_ms": single_ms,
        "devices_used": sorted(set(device.values())),
        "transfers": len(plan.transfers),
    }


def _pingpong(rank: int, world: int, port: int, sizes: Sequence[int], reps: int, queue: Any) -> None:
    import torch.distributed as dist

    _init(rank, world, port)
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
    (one_way,), _ = _spawn(_pingpong, 2, (sizes, reps), results=1)
    xs, ys = list(one_way), [one_way[n] for n in one_way]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)
    return {
        "latency_ms": max(0.0, my - slope * mx),
        "bandwidth_bytes_per_ms": 1.0 / slope if slope > 0 else 1e12,
        "one_way_ms": one_way,
    }
