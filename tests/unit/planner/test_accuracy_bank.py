"""ipa-energy's accuracy budget over the requests served (planner.accuracy_bank, through the loop)."""

import numpy as np

from tests.unit.planner.loop_helpers import Clock, loop


def test_the_accuracy_budget_holds_over_the_requests_served_not_plan_by_plan(setup):
    """ipa-energy at a steady 11 req/s on 2 cores: IPA runs resnet101 × 2; resnet50 saves
    energy but is 1.24 points below. Plan by plan, a one-point budget never allows it; over the
    requests served, the intervals that give up less bank the rest, and resnet50 runs as long
    as the bank pays for it: the mean accuracy given up stays within the budget."""
    from ipa_energy.cluster import ClusterSupply, NodeSupply
    from planner.terms import Weights

    supply = ClusterSupply(nodes=(NodeSupply(node_id="n", cores=2.0, memory_mb=16_000.0, outside_cores=0.27),),
                           source="test")
    history = np.full(120, 11.0)

    def run(weights):
        clock = Clock()
        planner = loop(setup, [], clock=clock, weights=weights, supply=supply, serving_cpu_s=0.02, max_replicas=2)
        given_up, below = [], 0
        for _ in range(40):
            d = planner.step(history)
            given_up.append(d.reference_accuracy - d.accuracy)
            below += d.reference_accuracy - d.accuracy > 0.01 + 1e-9
            clock.t += 10
        return np.array(given_up), below, planner

    given_up, below, planner = run(Weights())
    assert below >= 10  # the bank spent on the cheaper variant
    assert given_up.mean() <= 0.01 + 1.24e-2 / 40  # within the budget, but for one interval's overshoot
    assert planner.state()["accuracy_bank"] == planner.accuracy_bank
    given_up, below, _ = run(Weights(accuracy_window_s=None))
    assert below == 0 and given_up.max() <= 0.01 + 1e-9
