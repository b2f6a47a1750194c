"""Host costs fitted to live runs' energy windows (sim.calibrate)."""

from types import SimpleNamespace

import numpy as np
import pytest

from experiments.schema import Decision, EnergyWindow
from sim.calibrate import fit_host, hidden_cores, host_factor

ACTIVE = 2.0  # J per busy core-second


def fake_run(rates, base_cores=0.6, per_request=0.02, idle_w=3.0, window_s=2.0):
    """A run whose windows hold exactly what the host model says: idle, and other = (base + slope × rate) cores."""
    requests, windows, t = [], [], 1000.0
    for rate in rates:
        n = int(rate * window_s)
        requests += [SimpleNamespace(sent_s=t + (i + 0.5) * window_s / max(n, 1)) for i in range(n)]
        other = (base_cores + per_request * n / window_s) * ACTIVE * window_s
        windows.append(EnergyWindow(node_id="n", start_s=t, end_s=t + window_s, method="tdp-estimate",
                                    energy_j={"cpu:0": idle_w * window_s + other}, other_j=other, idle_j=idle_w * window_s))
        t += window_s
    return SimpleNamespace(requests=requests, energy=windows, decisions=[])


def test_the_fit_recovers_the_background_the_per_request_cost_and_idle_power():
    run = fake_run([1, 2, 5, 8, 3, 10, 0, 6])
    fit = fit_host([run], ACTIVE)
    assert fit["background_cores"] == pytest.approx(0.6, abs=1e-6)
    assert fit["serving_cpu_s"] == pytest.approx(0.02, abs=1e-6)
    assert fit["idle_w"] == pytest.approx(3.0)


def test_a_negative_slope_or_intercept_is_clipped_and_too_few_windows_refused():
    fit = fit_host([fake_run([1, 2, 5, 8], per_request=-0.01)], ACTIVE)
    assert fit["serving_cpu_s"] == 0.0 and fit["background_cores"] > 0
    with pytest.raises(ValueError, match="too few"):
        fit_host([fake_run([1, 2])], ACTIVE)


def test_the_host_factor_is_the_median_after_each_runs_first_decision():
    def decision(f):
        return Decision(time_s=0, observed_rps=1, predicted_rps=1, predictor="x", policy="ipa", stages={}, accuracy=0.5,
                        predicted_power_w=None, predicted_j_per_request=None, energy_method="tdp-estimate",
                        feasible=True, solve_time_s=0, corrections={"*": f})
    run = SimpleNamespace(decisions=[decision(5.0), decision(1.0), decision(1.2), decision(1.1)])
    assert host_factor([run]) == pytest.approx(1.1)
    assert host_factor([SimpleNamespace(decisions=[])]) is None
    assert np.isfinite(host_factor([run]))


def test_the_hidden_background_is_what_the_live_planner_did_not_read_as_outside():
    def decision(observed, background):
        return Decision(time_s=0, observed_rps=observed, predicted_rps=1, predictor="x", policy="ipa", stages={},
                        accuracy=0.5, predicted_power_w=None, predicted_j_per_request=None, energy_method="tdp-estimate",
                        feasible=True, solve_time_s=0, background_cores=background)
    fit = {"background_cores": 0.8, "serving_cpu_s": 0.0}
    # the live planner read 0.3 cores outside at each step (its background plus 0.02 s × the observed rate)
    run = SimpleNamespace(decisions=[decision(r, 0.3 - 0.02 * r) for r in (1.0, 2.0, 5.0, 8.0)]
                          + [Decision(time_s=0, observed_rps=1, predicted_rps=1, predictor="x", policy="ipa", stages={},
                                      accuracy=0.5, predicted_power_w=None, predicted_j_per_request=None,
                                      energy_method="tdp-estimate", feasible=True, solve_time_s=0)])  # none logged
    assert hidden_cores([run], fit, 0.02) == pytest.approx(0.5)
    assert hidden_cores([SimpleNamespace(decisions=[])], fit, 0.02) == 0.0
    read_more = SimpleNamespace(decisions=[decision(1.0, 2.0)])  # more than the fit: nothing is hidden
    assert hidden_cores([read_more], fit, 0.02) == 0.0


def test_the_planner_timing_is_the_median_phase_and_lead_of_the_live_runs():
    from sim.calibrate import planner_timing

    def run(first_s, from_s=None, surge_first=False):
        def decision(t, trigger):
            return Decision(time_s=t, observed_rps=1, predicted_rps=1, predictor="x", policy="ipa", stages={},
                            accuracy=0.5, predicted_power_w=None, predicted_j_per_request=None,
                            energy_method="tdp-estimate", feasible=True, solve_time_s=0, trigger=trigger)
        decisions = ([decision(1000 + first_s - 10, "surge")] if surge_first else []) + \
            [decision(1000 + first_s, "interval"), decision(1000 + first_s + 10, "interval")]
        meta = SimpleNamespace(load_start_s=1000.0, interval_s=10.0, planner_history_from_s=from_s)
        return SimpleNamespace(decisions=decisions, meta=meta)

    # first decisions 11.6, 12.0 and 13.5 s after second 0; a run whose first step was a surge (it
    # restarts the interval: the actor's start is unknown) is left out
    start, lead = planner_timing([run(11.6), run(12.0), run(13.5), run(25.0, surge_first=True)], default_lead_s=3)
    assert start == pytest.approx(2.0) and lead == 3  # no run recorded its history's start
    # the actor keeps int(t0 − from) whole seconds: at t0 = 1011.6 from 996.2 it read from Unix second 996
    _, lead = planner_timing([run(11.6, from_s=996.2), run(12.0, from_s=994.9), run(12.0, from_s=995.1)], default_lead_s=3)
    assert lead == 4
