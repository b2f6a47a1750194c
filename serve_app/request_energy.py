"""What the app's answered requests were charged, per pipeline.

Each ingress replica adds every answered request's energy to its :class:`RequestEnergyBook`
and pushes the book's :meth:`~RequestEnergyBook.dump` (running totals, so a repeated push
cannot double-count) to the app's arrivals actor. The actor sums the replicas' dumps
(:func:`sum_dumps`), and ``GET /v1/energy`` turns the sum into :class:`PipelineEnergy` rows
(:func:`pipeline_energy`). Plain Python, tested without Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ipa_energy.energy import BatchEnergy, EnergyPart, PipelineEnergy, RequestEnergy, join_methods

__all__ = ["RequestEnergyBook", "pipeline_energy", "sum_dumps"]

#: one pipeline's totals as pushed and summed: {"requests": int, "energy_j": J, "methods": [str]}
Totals = dict


class RequestEnergyBook:
    """One ingress replica's requests and their attributed energy (J), per pipeline."""

    def __init__(self, carbon_g: Callable[[float], float]):
        self.carbon_g = carbon_g  # J → g CO2e (the app's EnergyConfig.carbon_g)
        self.totals: dict[str, Totals] = {}

    def __bool__(self) -> bool:
        return bool(self.totals)

    def charge(self, pipeline: str, by_stage: Mapping[str, BatchEnergy | None]) -> RequestEnergy | None:
        """A request's energy (J) with its method, added to its pipeline's totals; None while a
        stage has no rates yet (the first seconds of a replica)."""
        if any(e is None for e in by_stage.values()):
            return None
        joules = sum(e.j for e in by_stage.values())
        method = join_methods(e.method for e in by_stage.values())
        total = self.totals.setdefault(pipeline, {"requests": 0, "energy_j": 0.0, "methods": []})
        total["requests"] += 1
        total["energy_j"] += joules
        if method not in total["methods"]:
            total["methods"] = sorted({*total["methods"], method})
        return RequestEnergy(j=joules, method=method, carbon_g=self.carbon_g(joules),
                             stages={s: EnergyPart(j=e.j, method=e.method) for s, e in by_stage.items()})

    def dump(self) -> dict[str, Totals]:
        """The totals as pushed (a copy: later charges do not change what was sent)."""
        return {name: {**t, "methods": list(t["methods"])} for name, t in self.totals.items()}


def sum_dumps(dumps: Iterable[Mapping[str, Totals]]) -> dict[str, Totals]:
    """Pipeline → totals summed over several replicas' dumps."""
    out: dict[str, Totals] = {}
    for dump in dumps:
        for pipeline, t in dump.items():
            acc = out.setdefault(pipeline, {"requests": 0, "energy_j": 0.0, "methods": []})
            acc["requests"] += int(t["requests"])
            acc["energy_j"] += float(t["energy_j"])
            acc["methods"] = sorted({*acc["methods"], *t["methods"]})
    return out


def pipeline_energy(totals: Mapping[str, Totals], carbon_g: Callable[[float], float]) -> dict[str, PipelineEnergy]:
    """The ``pipelines`` of ``GET /v1/energy``: J/request of each pipeline that answered a request."""
    return {name: PipelineEnergy(requests=t["requests"], energy_j=t["energy_j"], methods=t["methods"],
                                 j_per_request=t["energy_j"] / t["requests"], carbon_g=carbon_g(t["energy_j"]))
            for name, t in totals.items() if t["requests"]}
