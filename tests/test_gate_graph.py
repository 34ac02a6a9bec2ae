"""GateGraph: live edges and cheapest paths against brute-force enumeration; sensitive gates against flips."""

from __future__ import annotations

import itertools
import random

import pytest

from search_spaces import ConvolutionalNeuralFabric, ResNetFabric


@pytest.mark.parametrize(
    "space",
    [
        ConvolutionalNeuralFabric(layers=4, channels=2, image_size=8, in_channels=1),
        ResNetFabric(units=2, maps=(2, 4), shortcuts="slr", in_channels=1),
    ],
    ids=["cnf", "resnet-fabric"],
)
def test_sensitive_gates_are_exactly_those_whose_flip_changes_the_pruned_architecture(space):
    rng = random.Random(0)
    graph = space.graph
    for _ in range(30):
        p = rng.random()
        arch = {label: "on" if rng.random() < p else "off" for label in space.gate_labels}
        pruned = graph.prune(arch)
        sensitive = graph.sensitive(arch)
        for label in space.gate_labels:
            flipped = {**arch, label: "off" if arch[label] == "on" else "on"}
            changed = graph.prune(flipped) != pruned
            assert changed == (label in sensitive), (label, arch[label])
            if label not in sensitive:
                assert graph.is_connected(flipped) == graph.is_connected(arch)


# Small enough to enumerate every architecture: 11, 10 and 8 gates (the ResNet fabric has ungated edges).
SMALL = {
    "cnf-2x4": lambda: ConvolutionalNeuralFabric(layers=2, channels=1, image_size=4, in_channels=1),
    "cnf-3x2": lambda: ConvolutionalNeuralFabric(layers=3, channels=1, image_size=2, in_channels=1),
    "resnet-fabric": lambda: ResNetFabric(units=2, maps=(1, 2), shortcuts="slr", in_channels=1),
}


def every_arch(labels):
    for bits in itertools.product(("off", "on"), repeat=len(labels)):
        yield dict(zip(labels, bits))


def every_path(graph):
    """Every input -> output path of the graph, as a tuple of edge indices (depth-first, no pruning)."""
    out_edges = {}
    for i, (s, _, _) in enumerate(graph.edges):
        out_edges.setdefault(s, []).append(i)
    paths, stack = [], [(graph.source, ())]
    while stack:
        node, path = stack.pop()
        if node == graph.sink:
            paths.append(path)
        for i in out_edges.get(node, []):
            stack.append((graph.edges[i][1], path + (i,)))
    return paths


def brute_live(graph, paths, arch):
    """An edge is live when some input -> output path through it has every edge present."""
    present = [label is None or arch[label] == "on" for _, _, label in graph.edges]
    live = [False] * len(graph.edges)
    for path in paths:
        if all(present[i] for i in path):
            for i in path:
                live[i] = True
    return live


@pytest.mark.parametrize("make", SMALL.values(), ids=SMALL.keys())
def test_live_edges_are_the_present_edges_of_some_complete_input_output_path_in_every_architecture(make):
    graph = make().graph
    paths = every_path(graph)
    assert paths
    gated = [i for i, (_, _, label) in enumerate(graph.edges) if label is not None]
    for arch in every_arch(graph.labels):
        live = graph.live_edges(arch)
        assert live == brute_live(graph, paths, arch), arch
        assert graph.alive_mask(arch) == [live[i] for i in gated]
        assert graph.alive(arch) == {graph.edges[i][2] for i in gated if live[i]}
        assert graph.is_connected(arch) == any(live)
        assert graph.prune(arch) == {
            label: "on" if live[i] else "off" for i, label in zip(gated, graph.labels)
        }


def brute_cost(graph, paths, arch, gate_cost, node_cost):
    """What an architecture costs when only live gates and the nodes they feed (and the input) count."""
    live = brute_live(graph, paths, arch)
    nodes = {graph.source} | {t for (_, t, _), is_live in zip(graph.edges, live) if is_live}
    gates = sum(gate_cost[label] for (_, _, label), is_live in zip(graph.edges, live) if is_live and label)
    return gates + (sum(node_cost[n] for n in nodes) if node_cost is not None else 0.0)


def path_cost(graph, path, gate_cost, node_cost):
    gates = sum(gate_cost[graph.edges[i][2]] for i in path if graph.edges[i][2] is not None)
    if node_cost is None:
        return gates
    return gates + node_cost[graph.source] + sum(node_cost[graph.edges[i][1]] for i in path)


@pytest.mark.parametrize("with_nodes", [False, True], ids=["gates", "gates+nodes"])
@pytest.mark.parametrize("make", SMALL.values(), ids=SMALL.keys())
def test_cheapest_path_is_the_cheapest_path_and_architecture_by_enumeration(make, with_nodes):
    graph = make().graph
    paths = every_path(graph)
    all_gated = all(label is not None for _, _, label in graph.edges)
    rng = random.Random(0)
    for _ in range(3):
        gate_cost = {label: rng.choice([0.0, 1.0, rng.random() * 5]) for label in graph.labels}
        node_cost = [rng.random() for _ in graph.nodes] if with_nodes else None
        dist, arch = graph.cheapest_path(gate_cost, node_cost)
        assert dist == pytest.approx(min(path_cost(graph, p, gate_cost, node_cost) for p in paths))
        assert graph.is_connected(arch) and graph.prune(arch) == arch
        # the architecture turns on exactly the gates of one path of that cost
        on = {label for label, v in arch.items() if v == "on"}
        assert any(
            on == {graph.edges[i][2] for i in p} - {None}
            and path_cost(graph, p, gate_cost, node_cost) == pytest.approx(dist)
            for p in paths
        )
        if with_nodes and not all_gated:
            continue  # ungated edges keep nodes off the path alive: no architecture costs as little as a path
        best = min(
            brute_cost(graph, paths, a, gate_cost, node_cost)
            for a in every_arch(graph.labels)
            if any(brute_live(graph, paths, a))
        )
        assert dist == pytest.approx(best)
        assert brute_cost(graph, paths, arch, gate_cost, node_cost) == pytest.approx(dist)


@pytest.mark.parametrize("make", SMALL.values(), ids=SMALL.keys())
def test_paths_through_gives_each_absent_gate_the_lightest_path_through_it_by_enumeration(make):
    graph = make().graph
    paths = every_path(graph)
    rng = random.Random(1)
    for _ in range(20):
        arch = {label: "on" if rng.random() < 0.3 else "off" for label in graph.labels}
        weight = {label: rng.choice([0.0, rng.random() * 3]) for label in graph.labels}
        found = graph.paths_through(arch, weight)
        present = [label is None or arch[label] == "on" for _, _, label in graph.edges]
        for i, (_, _, label) in enumerate(graph.edges):
            if label is None or present[i]:
                continue
            through = [p for p in paths if i in p]
            if not through:
                assert label not in found
                continue
            lightest = min(sum(weight[graph.edges[j][2]] for j in p if not present[j]) for p in through)
            gates = found[label]
            assert gates[0] == label and len(set(gates)) == len(gates)
            assert sum(weight[g] for g in gates) == pytest.approx(lightest)
            added = {**arch, **dict.fromkeys(gates, "on")}
            assert label in graph.alive(added), (label, gates)  # the gate is live once its path is added
