"""Valid pipeline answers and descriptions, as the ingress gives them (ipa_energy.messages)."""

from ipa_energy.messages import PipelineAnswer, PipelineInfo


def answer(variants: dict[str, str], plan_version: int = 1, energy: dict | None = None) -> bytes:
    """A PipelineAnswer's JSON with `variants`, the plan version and an optional energy figure."""
    stages = {s: {} for s in variants}
    if energy is not None:
        energy = {"carbon_g": 0.0, "stages": {s: {"j": energy["j"] / len(variants), "method": energy["method"]}
                                               for s in variants}, **energy}
    return PipelineAnswer(
        pipeline="p", outputs=stages, variants=variants, weights={s: "random" for s in variants},
        batch_sizes={s: 1 for s in variants}, replicas={s: "r" for s in variants},
        latency_ms={"total": 1.0}, compute_ms={s: 1.0 for s in variants}, energy=energy, plan_version=plan_version,
    ).model_dump_json().encode()


def description(request_properties: dict) -> bytes:
    """A PipelineInfo's JSON whose request schema has `request_properties`."""
    return PipelineInfo(name="p", description="", sla_ms=1000.0, stages=[],
                        request_schema={"properties": request_properties}).model_dump_json().encode()
