"""Every mini variant of every pipeline serves a real request through serve_app."""

import pytest

from ipa_energy.spec import Plan, StagePlan
from serve_app import control
from workloads import catalog, payloads

pytestmark = pytest.mark.integration


def round_plans(r: int) -> list[Plan]:
    """Plans that put variant r (mod the ladder length) on every stage of every pipeline."""
    return [
        Plan(pipeline=p.name, policy="e2e-test",
             stages={s.name: StagePlan(variant=s.variants[r % len(s.variants)].name) for s in p.stages})
        for p in catalog.pipelines("mini").values()
    ]


def test_every_mini_variant_serves_end_to_end(http):
    pipelines = catalog.pipelines("mini")
    want = {(p.name, s.name, v.name) for p in pipelines.values() for s in p.stages for v in s.variants}
    rounds = max(len(s.variants) for p in pipelines.values() for s in p.stages)
    seen = set()
    # The app is left on the last round's plans: the other tests read the active plan
    # instead of assuming the defaults (restoring them would cost another round).
    for r in range(rounds):
        control.apply_plan(round_plans(r), timeout_s=600)
        for p in pipelines.values():
            response = http.post(f"/v1/pipelines/{p.name}", json=payloads.request_for(p.input_keys, seed=r))
            assert response.status_code == 200, (p.name, r, response.text[:300])
            body = response.json()
            assert set(body["outputs"]) == {s.name for s in p.stages}
            assert set(body["weights"].values()) == {"random"}
            seen |= {(p.name, stage, variant) for stage, variant in body["variants"].items()}
    assert seen == want, sorted(want - seen)
