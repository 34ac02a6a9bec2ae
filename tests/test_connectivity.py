"""Whether the input reaches the output on spaces without gates: NasBench201's cells checked by their structure
(what BSN charges every step, what the random baseline and compare rely on) agree with a forward pass."""

from __future__ import annotations

import itertools
import random
import time

from nni_bsn.network.evaluation import input_reaches_output
from nni_bsn.strategy.budget import charged_costs
from nni_bsn.strategy.connectivity import space_connectivity
from tests.nni_models import small_hub_space

SHAPE = (1, 3, 16, 16)


def test_nasbench201_cells_connect_exactly_when_the_output_reads_the_input():
    space = small_hub_space("nasbench201")
    labels = list(space.simplify())
    connected = space_connectivity(space)
    rng = random.Random(0)
    cases = [
        {label: "none" for label in labels},
        {
            label: ("none" if label.endswith("_3") else "skip_connect") for label in labels
        },  # nothing into node 3
        {
            label: ("none" if label in ("cell/0_1", "cell/0_2", "cell/0_3") else "conv_1x1")
            for label in labels
        },
        {
            label: ("conv_3x3" if label in ("cell/0_2", "cell/2_3") else "none") for label in labels
        },  # one path
        {label: ("avg_pool_3x3" if label == "cell/0_3" else "none") for label in labels},
    ]
    # and random architectures, half of each edge 'none' (so both verdicts come up)
    ops = ["skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3"]
    cases += [{label: rng.choice(["none", rng.choice(ops)]) for label in labels} for _ in range(12)]
    verdicts = [connected(arch) for arch in cases]
    assert verdicts[:5] == [False, False, False, True, True]
    assert verdicts == [input_reaches_output(space.freeze(arch), SHAPE) for arch in cases]
    assert True in verdicts[5:] and False in verdicts[5:]


def test_the_check_is_a_microsecond_one_and_disconnected_cells_are_charged_the_whole_network():
    space = small_hub_space("nasbench201")
    labels = list(space.simplify())
    connected = space_connectivity(space)
    archs = [
        dict(zip(labels, ops))
        for ops in itertools.islice(itertools.product(["none", "conv_1x1"], repeat=6), 64)
    ]
    started = time.perf_counter()
    for arch in archs * 10:
        connected(arch)
    assert (time.perf_counter() - started) / 640 < 1e-4

    class _Budget:
        full, limit, name = 100.0, 50.0, "macs"

        def __call__(self, arch):
            return 1.0

    cut = {label: "none" for label in labels}
    assert charged_costs(cut, [_Budget()], connected) == [100.0]
    assert charged_costs({**cut, "cell/0_3": "skip_connect"}, [_Budget()], connected) == [1.0]


def test_the_fabrics_keep_their_own_check_and_other_spaces_have_none():
    from nni_bsn.jobs.builders import build_space
    from nni_bsn.jobs.config import SearchConfig

    fabric, _ = build_space(SearchConfig(space="cnf", layers=3, channels=4), 1, 10, 8)
    assert space_connectivity(fabric) == fabric.is_connected
    assert space_connectivity(small_hub_space("mobilenetv3")) is None
