"""Scale mode's planner: the program solved on a grid of its inputs, each solve kept.

A 21-day run steps the planner tens of thousands of times, and at 1,000 nodes one
:func:`planner.optimizer.optimize` takes about a second. :class:`GridOptimizer` stands in for
it in the loop (PlannerLoop's `optimize`): it rounds what varies continuously to a relative
grid — the load up (`step`, 5 %), the fill rate down and each variant's learnt correction
factor up (`factor_step`, 10 %: its latencies longer, its throughput lower), the busy cores
outside the replicas up (the cluster's, and a node in use's share to a point) — then solves
the program **at the rounded inputs** and keeps the plan under them. A plan is therefore
exactly the program's plan for inputs at most one grid step more pessimistic than the loop's;
a repeat of the same rounded inputs costs a lookup. The
running plan is not part of the key: the fewest-changes tie-break is off (at equal inputs the
program's plan is the same anyway). ipa-energy's plan is made against IPA's at the same inputs
(planner.optimizer's reference): that is kept on the grid too, under IPA's own key (IPA's program
reads only α, β and δ of the weights), so a step whose accuracy allowance moved (the loop's
accuracy bank: a new value every step) still finds it; and the allowance itself is keyed by the
variants it admits (:meth:`GridOptimizer._allowance_on_grid`: exact, not rounded), so
ipa-energy's own plans repeat as IPA's do (22 days of video at 1,000 nodes: 611 → 397 s, the
same decisions).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict
from collections.abc import Mapping

from ipa_energy.spec import Plan, Profile
from planner.correction import Corrections
from planner.optimizer import optimize, uses_reference
from planner.terms import Weights

__all__ = ["GridOptimizer"]


class GridOptimizer:
    #: the most pipeline accuracies listed for the allowance's grid (past it, the allowance is the key)
    MAX_LEVELS = 100_000

    def __init__(self, profiles: Mapping[tuple[str, int], Profile], step: float = 0.05, factor_step: float = 0.10,
                 kept: int = 4096):
        self.base, self.step, self.factor_step, self.kept = dict(profiles), step, factor_step, kept
        self._first = {}  # variant → its first profiled key (its factor is read there)
        for key in sorted(self.base):
            self._first.setdefault(key[0], key)
        self._plans: OrderedDict = OrderedDict()
        self._levels: dict[str, list[float] | None] = {}  # pipeline → the accuracies its variants make
        self._supplies: dict = {}  # the last supply key → the supply at the rounded inputs
        self.hits = self.misses = 0
        self.solve_s = 0.0

    def _up(self, x: float, step: float | None = None) -> float:
        step = step or self.step
        return 0.0 if x <= 0 else (1 + step) ** math.ceil(math.log(x) / math.log1p(step) - 1e-9)

    def _down(self, x: float, step: float | None = None) -> float:
        step = step or self.step
        return 0.0 if x <= 0 else (1 + step) ** math.floor(math.log(x) / math.log1p(step) + 1e-9)

    def __call__(self, pipeline, profiles, load, *, current: Plan | None = None, supply=None,
                 fill_rps: float | None = None, replicas=None, **kw) -> Plan:
        started = time.perf_counter()
        factors = tuple(sorted((v, self._up(profiles[k].latency_p50_ms / self.base[k].latency_p50_ms, self.factor_step))
                               for v, k in self._first.items() if self.base[k].latency_p50_ms > 0))
        load_q = self._up(load)
        fill_q = self._down(fill_rps, self.factor_step) if fill_rps is not None else None
        if supply is not None:
            grain = self.step * supply.cores / 10  # a tenth of a grid step of the cluster's cores
            background = math.ceil(supply.background_cores / grain) * grain if grain > 0 else supply.background_cores
            # a node in use's share busy outside the replicas (the packing bound's), up to a point
            share = math.ceil(supply.outside_share * 100 - 1e-9) / 100
            supply_key = (len(supply.nodes), supply.cores, background, share)
        else:
            background, share, supply_key = None, None, None
        weights = kw.get("weights", Weights())
        if uses_reference(kw.get("policy", "ipa-energy"), weights):  # IPA's plan, from the grid
            ipa = Weights(alpha=weights.alpha, beta=weights.beta, delta=weights.delta)
            kw["reference"] = self(pipeline, profiles, load, supply=supply, fill_rps=fill_rps, replicas=replicas,
                                   **{**kw, "policy": "ipa", "weights": ipa})
            kw["weights"] = self._allowance_on_grid(pipeline, kw["reference"], weights)
            started = time.perf_counter()  # its solve counted there, once
        fixed = tuple(sorted(replicas.items())) if isinstance(replicas, Mapping) else replicas
        key = (pipeline.name, load_q, fill_q, factors, supply_key, fixed,
               tuple(sorted((k, v) for k, v in kw.items() if k != "reference")))
        plan = self._plans.get(key)
        if plan is not None:
            self.hits += 1
            self._plans.move_to_end(key)
            return plan.model_copy(update={"solve_time_s": time.perf_counter() - started})
        self.misses += 1
        corrections = Corrections()
        corrections.factors = dict(factors)
        corrected = corrections.apply(self.base)
        if supply is not None:  # the rounded inputs (the program reads only the busy nodes' mean share)
            if supply_key not in self._supplies:
                nodes = tuple(n.model_copy(update={"outside_cores": share * n.cores}) if n.outside_cores > 0 else n
                              for n in supply.nodes)
                self._supplies = {supply_key: supply.model_copy(update={"background_cores": background, "nodes": nodes})}
            supply = self._supplies[supply_key]
        plan = optimize(pipeline, corrected, load_q, supply=supply, fill_rps=fill_q, replicas=replicas, **kw)
        self._plans[key] = plan
        if len(self._plans) > self.kept:
            self._plans.popitem(last=False)
        self.solve_s += time.perf_counter() - started
        return plan

    def _allowance_on_grid(self, pipeline, reference: Plan, weights: Weights) -> Weights:
        """`weights` with its accuracy allowance moved to the one that admits the same plans.

        The allowance enters the program only as a floor on the pipeline's accuracy (the
        reference's less the allowance), and a pipeline's accuracy is a product of its stages'
        published ones: a finite set. Every floor between two of them admits the same
        variants, so the floor is raised to the lowest accuracy at or above it (less a hair,
        so that accuracy stays in): the same program, and a key that repeats."""
        budget = weights.accuracy_budget
        if budget is None:
            return weights
        if not reference.objective.get("feasible"):  # no floor is set: any allowance is the same
            return weights.model_copy(update={"accuracy_budget": 0.0})
        levels = self._accuracies(pipeline)
        if levels is None:
            return weights
        top = pipeline.accuracy(reference)
        floor = top - budget
        at = bisect.bisect_left(levels, floor * (1 - 1e-12))
        if at >= len(levels):  # above every accuracy (not expected: the reference's is one)
            return weights
        below = levels[at - 1] if at > 0 else 0.0
        hair = min(1e-9, (levels[at] - below) / 2)
        return weights.model_copy(update={"accuracy_budget": max(0.0, top - (levels[at] - hair))})

    def _accuracies(self, pipeline) -> list[float] | None:
        """The pipeline accuracies its variants can make, ascending (None: too many to list)."""
        if pipeline.name not in self._levels:
            levels = {1.0}
            for stage in pipeline.stages:
                levels = {a * v.accuracy.value for a in levels for v in stage.variants}
                if len(levels) > self.MAX_LEVELS:
                    levels = None
                    break
            merged = None
            if levels is not None:  # products equal but for float rounding are one level
                merged = []
                for a in sorted(levels):
                    if not merged or a > merged[-1] * (1 + 1e-12):
                        merged.append(a)
            self._levels[pipeline.name] = merged
        return self._levels[pipeline.name]
