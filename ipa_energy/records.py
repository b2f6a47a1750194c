"""Typed run records: what load was offered, what each request saw, what the planner decided.

The load generator writes :class:`RequestRow`, the planner :class:`Decision`, the
experiment runner :class:`ReplicaSample` (and energy as :class:`ipa_energy.energy.EnergyWindow`);
reports read them back through the same models. Times are Unix seconds (float) unless a
field says otherwise; latency is in milliseconds, energy in joules, power in watts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ipa_energy.energy import MethodLabel

__all__ = ["Decision", "LoadStart", "ReplicaSample", "RequestRow", "StageObservation", "TraceSpec"]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceSpec(_Row):
    """What load was offered: a Twitter window, a constant rate or a per-second CSV."""

    kind: Literal["twitter", "constant", "csv"]
    name: str = Field(description="Window name (bursty, steady_low, ...), 'constant', or the CSV's file name.")
    start_s: int | None = Field(None, description="First second of the window in the Twitter trace.")
    offset_s: int = Field(0, ge=0, description="Seconds of the window skipped before the replay starts.")
    seconds: int = Field(gt=0, description="Length of the replayed load (s).")
    rate_factor: float = Field(gt=0, description="Multiplier applied to the trace (after IPA's damping of 8).")
    damping: float = Field(1.0, gt=0, description="Divisor applied before the rate factor (8 for Twitter, as IPA).")
    rate_rps: float | None = Field(None, description="The rate of a constant trace (req/s, before the rate factor).")
    path: str | None = Field(None, description="CSV path for kind 'csv'.")
    seed: int = Field(0, description="Seed of the exponential arrival times within each second.")

    def argument(self) -> str:
        """The ``--trace`` value that names this trace (Locust, ``ipa-energy experiment``)."""
        return {"twitter": self.name, "constant": f"constant:{self.rate_rps}", "csv": self.path or self.name}[self.kind]


class RequestRow(_Row):
    """One request as the load generator saw it."""

    scheduled_s: float | None = Field(None, description="When the trace said to send it; sent_s - scheduled_s is the generator's lag.")
    sent_s: float
    finished_s: float
    latency_ms: float
    status: int = Field(description="HTTP status; 0 when no response arrived.")
    error: str = ""
    shed: bool = Field(False, description="A 503 the app answered at once because the plan could not serve the load "
                                          "within the SLA (ipa_energy.messages.Shed); an SLO miss, counted apart from failures.")
    plan_version: int | None = None
    variants: dict[str, str] = Field(default_factory=dict, description="stage → variant that served it.")
    energy_j: float | None = Field(None, description="Dynamic energy attributed to this request (J).")
    energy_method: MethodLabel | None = None
    count: int = Field(1, ge=1, description="Requests the row stands for: 1 for each request a load generator sent; "
                       "more in the simulator's scale mode, where a row holds the requests of one time bucket and "
                       "latency band (docs/simulator.md, \"Scale mode\"). Every figure of the results weighs rows by it.")


class LoadStart(_Row):
    """When a replay's second 0 was (the generator writes it beside its RequestRows)."""

    load_start_s: float = Field(description="Unix time of second 0 of the trace.")
    trace: TraceSpec
    scheduled: int = Field(ge=0, description="Requests the trace schedules.")


class ReplicaSample(_Row):
    time_s: float
    replicas: dict[str, int] = Field(description="Stage deployment → RUNNING replicas.")
    cost_units: float = Field(description="Σ replicas × resource units of their variant.")
    nodes: int | None = Field(None, description="Nodes in use (holding a replica or not yet released); the "
                              "simulator's scale mode records it, live runs leave it out.")


class StageObservation(_Row):
    """What one stage variant achieved over an interval, from the replicas' own timings (all ingress replicas)."""

    stage: str
    variant: str
    seconds: int = Field(gt=0, description="Length of the interval (s).")
    requests: int = Field(ge=0, description="Stage calls answered in the interval.")
    s_per_request: float = Field(ge=0, description="Mean forward-pass seconds per request (its share of its batch).")
    mean_batch: float = Field(1.0, ge=1, description="Mean size of the batches the requests ran in.")
    p99_ms: float | None = Field(None, description="p99 of the stage call as the ingress timed it, queueing included (ms).")


class Decision(_Row):
    """One adaptation interval of the planner (IPA's adaptation_log fields, plus energy).

    Filled in two steps: the row is logged when the plan is chosen, and `changed`,
    `changes`, `apply_s` and `error` are set once applying it has finished.
    """

    time_s: float
    observed_rps: float = Field(description="Mean arrival rate over the last interval (req/s).")
    predicted_rps: float = Field(description="The predictor's load for the next interval (req/s).")
    planned_rps: float | None = Field(None, description="The load the plan was made for: the prediction, raised to the "
                                                        "reactive floor and to the trend at the horizon (req/s).")
    floor_rps: float | None = Field(None, description="Reactive floor: the highest per-second arrivals of the last "
                                                      "interval (req/s).")
    horizon_s: float | None = Field(None, description="How far ahead the plan must hold: the interval plus the cold "
                                                      "start of a replica the change would start (s).")
    background_cores: float | None = Field(None, description="Cores the plan could not have: the most the cluster was "
                                           "busy outside the stages over the last horizon, less the serving path the "
                                           "program counts (null: no cluster supply known).")
    predictor: str
    policy: str
    stages: dict[str, dict[str, Any]] = Field(description="stage → variant, batch_size, replicas (and mix).")
    accuracy: float
    predicted_power_w: float | None = Field(description="Power the plan is predicted to draw (W).")
    predicted_j_per_request: float | None = Field(description="Predicted dynamic J per request.")
    energy_method: MethodLabel = Field(description="Method of the profiles the predictions come from.")
    feasible: bool
    solve_time_s: float
    observed_p99_ms: dict[str, float] = Field(default_factory=dict, description="stage → p99 of its calls, as the ingress "
                                              "timed them (ms), over `p99_window_s`: the time the running plan has run "
                                              "unchanged (up to the predictor's window), else the last interval.")
    p99_window_s: int | None = Field(None, description="Seconds `observed_p99_ms` pools the calls over (None: the last "
                                                       "interval).")
    predicted_p99_ms: dict[str, float] = Field(default_factory=dict, description="stage → p99 the model predicts for the "
                                               "plan that ran, at the load observed over the same window (ms); only for a "
                                               "plan that ran the whole window and a stage with at least MIN_P99_CALLS "
                                               "calls in it; a stage the model says cannot keep up (unbounded) is left out.")
    corrections: dict[str, float] = Field(default_factory=dict, description="variant → factor on its profiled service "
                                                                            "time, learnt from what it achieved (1 = as profiled); "
                                                                            "'*': the host factor, which variants that have not run "
                                                                            "are planned with (planner.correction).")
    deferred: list[str] = Field(default_factory=list, description="Changes held back while the running plan still fits: "
                                                                  "a variant switch chosen for the first time (held one "
                                                                  "interval), or a scale-in the program's recommendations "
                                                                  "within the last horizon do not all agree with, or "
                                                                  "(ipa-energy) a grow whose bridge would cost more "
                                                                  "accuracy than the running replicas give up "
                                                                  "meanwhile (planner.changes).")
    bridge: dict[str, dict[str, Any]] = Field(default_factory=dict, description="stage → variant, batch_size, replicas "
                                                                            "the running replicas switched to in place "
                                                                            "before a change that starts replicas (the "
                                                                            "load outgrew them during its cold start; "
                                                                            "planner.loop); empty: none.")
    bridge_accuracy: float | None = Field(None, description="The bridge's pipeline accuracy (null: no bridge).")
    bridge_reference_accuracy: float | None = Field(None, description="ipa-energy: the accuracy of IPA's plan for the "
                                                    "bridge's replicas at its load, which the bridge was made against "
                                                    "(null: none; the bank counts the bridge against the plan's).")
    reference_accuracy: float | None = Field(None, description="ipa-energy: the accuracy of IPA's plan at the same "
                                             "load and capacity, which the plan was made against (null: none).")
    accuracy_allowance: float | None = Field(None, description="ipa-energy: the pipeline accuracy (a fraction) this "
                                             "plan could give up against IPA's: the budget plus what earlier "
                                             "intervals banked, per request expected (planner.loop).")
    trigger: Literal["interval", "surge"] = Field("interval", description="What started the step: the interval, or "
                                                     "arrivals surging past the running plan's load in between.")
    changed: bool = False
    changes: list[str] = Field(default_factory=list)
    apply_s: float | None = Field(None, description="Seconds applying took; None while it is being applied.")
    error: str | None = None
