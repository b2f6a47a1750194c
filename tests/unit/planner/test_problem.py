"""planner.problem and docs/plan-format.md: the documented JSON is what the code reads."""

import json
import re
from pathlib import Path

import pytest

from ipa_energy.spec import Plan
from planner.optimizer import optimize
from planner.profiles import profiles_from_store
from planner.problem import Problem, problem_from_catalog
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore

DOC = Path(__file__).resolve().parents[3] / "docs" / "plan-format.md"


def doc_json() -> list:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)]


def test_every_json_example_in_the_doc_validates():
    blocks = doc_json()
    plans = [Plan.model_validate(b) for b in blocks if "load_rps" not in b]
    problems = [Problem.model_validate(b) for b in blocks if "load_rps" in b]
    assert len(plans) >= 4 and len(problems) == 1
    assert {p.policy for p in plans} >= {"infadapter", "serve-autoscaling"}
    for plan in plans:  # every plan fits its catalog pipeline
        catalog.pipeline(plan.pipeline).check_plan(plan)


def test_the_documented_problem_solves_to_the_documented_mix():
    blocks = doc_json()
    problem = Problem.model_validate(next(b for b in blocks if "load_rps" in b))
    shown = Plan.model_validate(next(b for b in blocks if b.get("policy") == "infadapter"))
    plan = problem.solve()
    got = {m.variant: (m.share, m.batch_size, m.replicas) for m in plan.stages["classifier"].members()}
    want = {m.variant: (m.share, m.batch_size, m.replicas) for m in shown.stages["classifier"].members()}
    assert got.keys() == want.keys()
    for v, (share, b, n) in want.items():
        assert got[v][0] == pytest.approx(share, abs=1e-4) and got[v][1:] == (b, n)
    assert plan.objective["accuracy"] == pytest.approx(shown.objective["accuracy"], rel=1e-4)
    ipa = problem.model_copy(update={"policy": "ipa"}).solve()
    assert ipa.stages["classifier"].variant == "resnet18-112-mini" and ipa.stages["classifier"].mix is None


def test_a_catalog_problem_round_trips_and_solves_like_the_cli():
    problem = problem_from_catalog("video", 5, hardware="cpu-amd-epyc-2c", max_replicas=4)
    again = Problem.model_validate_json(problem.model_dump_json())
    assert again == problem
    pipe = catalog.pipeline("video")
    direct = optimize(pipe, profiles_from_store(ProfileStore(PROFILES_DIR), "cpu-amd-epyc-2c", pipe), 5, max_replicas=4)
    solved = again.solve()
    assert solved.stages == direct.stages
    assert solved.objective["objective"] == pytest.approx(direct.objective["objective"], abs=1e-12)
