"""The one result schema of an experiment run (documented in docs/results.md).

An experiment is one pipeline × trace × hardware, run once per policy, one after another
(or K times per policy, interleaved: `--repeat K`; repeat r ≥ 2 of a policy goes to the
folder `<policy>.r<r>`, see experiments.repeats). On disk::

    <out>/<experiment>/experiment.json        ExperimentMeta
    <out>/<experiment>/<policy>/run.json      RunMeta (status "complete" once every file is written)
    <out>/<experiment>/<policy>/requests.jsonl  one RequestRow per request Locust sent
    <out>/<experiment>/<policy>/decisions.jsonl one Decision per planner interval (planner policies only)
    <out>/<experiment>/<policy>/energy.jsonl    one EnergyWindow per node, meter and poll
    <out>/<experiment>/<policy>/replicas.jsonl  one ReplicaSample per poll
    <out>/<experiment>/<policy>/load.csv        second,scheduled (the trace after the rate factor)
    <out>/<experiment>/<policy>/summary.json    RunSummary (derived; rebuilt by the report)

Times are Unix seconds (float) unless a field says otherwise; energy is joules, power
watts, latency milliseconds. Every energy figure carries its method. The row types are the
ground floor's (ipa_energy.records, ipa_energy.energy); this module adds the run-level ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ipa_energy.energy import EnergyWindow, MethodLabel
from ipa_energy.records import Decision, ReplicaSample, RequestRow, TraceSpec

__all__ = [
    "SCHEMA_VERSION", "Decision", "EnergyWindow", "ExperimentMeta", "ReplicaSample", "RequestRow", "RunMeta",
    "RunSummary", "TraceSpec", "VariantInfo", "variant_infos",
]

SCHEMA_VERSION = 1


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantInfo(_Row):
    """What the report needs of a variant without the catalog."""

    stage: str
    accuracy: float
    metric: str
    resource_units: float = Field(description="Logical CPUs + GPUs one replica reserves (IPA's cost unit).")
    stands_for: str | None = None


def variant_infos(pipeline) -> dict[str, VariantInfo]:
    """Every variant of a pipeline (ipa_energy.spec.PipelineSpec), by name, as run.json keeps it."""
    return {
        v.name: VariantInfo(stage=s.name, accuracy=v.accuracy.value, metric=v.accuracy.metric,
                            resource_units=v.resources.num_cpus + v.resources.num_gpus, stands_for=v.stands_for)
        for s in pipeline.stages for v in s.variants
    }


class ExperimentMeta(_Row):
    schema_version: int = SCHEMA_VERSION
    experiment: str
    pipeline: str
    trace: TraceSpec
    hardware: str
    tier: str
    policies: list[str]
    repeat: int = Field(1, ge=1, description="Runs per policy asked for (the most of any invocation); "
                                             "repeat r ≥ 2 of a policy is the folder <policy>.r<r>.")
    created_at: float
    tool_version: str


class RunMeta(_Row):
    """One policy's run. `status` is "complete" only after every other file is written."""

    schema_version: int = SCHEMA_VERSION
    experiment: str
    pipeline: str
    policy: str
    repeat: int | None = Field(None, ge=1, description="Which run of its policy this is (1-based) when the experiment "
                                                        "ran each policy several times; null for a single run (read as 1).")
    policy_kind: Literal["planner", "static", "serve-autoscaling"]
    trace: TraceSpec
    hardware: str
    tier: str
    weights: Literal["random", "checkpoint", "mixed"]
    sla_ms: float
    interval_s: float | None = Field(None, description="Planner adaptation interval (planner policies).")
    predictor: str | None = None
    load_start_s: float = Field(description="Unix time of second 0 of the trace.")
    started_at: float
    ended_at: float | None = None
    variants: dict[str, VariantInfo] = Field(description="Every variant of the pipeline, by name.")
    initial_plan: dict = Field(description="The Plan (JSON) the run started with.")
    energy_methods: list[MethodLabel] = Field(default_factory=list)
    carbon_g_per_kwh: float
    pue: float
    consumers: dict[str, dict[str, str]] = Field(default_factory=dict, description="Energy consumer id → labels (deployment, pipeline, stage, variant).")
    locust: dict = Field(default_factory=dict, description="Locust command line, users, exit code.")
    warm_variants: bool | None = Field(None, description="Whether stage replicas kept their slot's other variants "
                                       "built (serve_app.warm; a switch a swap); null: not recorded (runs before "
                                       "2026-12-03, which kept none).")
    planner_history_from_s: float | None = Field(None, description="Unix time from which the planner read arrivals "
                                                 "(planner policies; it starts before the load generator, so the "
                                                 "seconds up to load_start_s are zeros in its history); null: not "
                                                 "recorded (runs before 2026-12-04) or no planner.")
    status: Literal["running", "complete", "failed"] = "running"
    error: str | None = None
    notes: list[str] = Field(default_factory=list)


class RunSummary(_Row):
    """Headline figures of one run, derived from the files above (experiments.summary)."""

    experiment: str
    pipeline: str
    policy: str
    trace: str
    rate_factor: float
    duration_s: float
    requests: int
    failed: int = Field(description="Requests not answered 200 and not shed: errors and no answer.")
    shed: int = Field(0, description="Requests the app refused at once with 503 because the plan could not serve "
                                     "the load within the SLA (SLO misses, counted apart from failures).")
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    sla_ms: float
    slo_attainment: float | None = Field(description="Share of sent requests answered 200 within the SLA.")
    generator_lag_p99_ms: float | None = Field(None, description="p99 of sent − scheduled: whether Locust kept to the trace.")
    accuracy: float | None = Field(description="Mean pipeline accuracy (product of stage accuracies) over answered requests.")
    cost_units: float | None = Field(description="Time-mean Σ replicas × resource units.")
    j_per_request: float | None = Field(description="Mean attributed dynamic energy per answered request (J).")
    j_per_request_method: MethodLabel | None
    requests_with_energy: int = Field(0, description="Answered requests that carried an energy figure (J/request averages these).")
    energy_j: float | None = Field(description="Node energy over the load window, idle included (J).")
    loadgen_energy_j: float | None = Field(None, description="Of energy_j, the share attributed to the load generator "
                                                             "(when it ran on a metered node) (J).")
    system_j_per_request: float | None = Field(None, description="(energy_j − loadgen_energy_j) / answered requests: "
                                                                 "what a bill would see, idle included (J).")
    mean_power_w: float | None = Field(description="Node mean power over the load window (W).")
    energy_method: MethodLabel | None
    energy_coverage: float | None = Field(None, description="Share of the load window the energy windows cover.")
    carbon_g: float | None = Field(description="energy_j × g/kWh × PUE / 3.6e6 (g CO2e).")
    plan_changes: int
    p99_prediction_error: float | None = Field(None, description="Median over intervals and stages of |predicted − "
                                                                 "observed| / observed stage p99 (planner decisions; each "
                                                                 "over its p99 window, with at least 100 calls).")
    p99_predictions: int = Field(0, description="Stage-intervals the p99 prediction error is taken over.")
    weights: str
