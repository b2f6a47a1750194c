"""`serve run serve_app:app key=value` arguments."""

import json

import pytest

from ipa_energy.errors import SpecError
from ipa_energy.spec import Plan, StagePlan
from serve_app.config import from_args, load_plans


def test_defaults_serve_the_video_pipeline_all_serves_every_one():
    spec, plans = from_args({})
    assert [p.name for p in spec.pipelines] == list(plans) == ["video"]
    spec, plans = from_args({"pipelines": "all"})
    assert {p.name for p in spec.pipelines} == set(plans) == {"video", "classify", "llm", "sam", "sam-grounded"}
    assert spec.control_token is None
    assert plans["video"].stages["classifier"].variant == "resnet18-mini"


def test_arguments_select_pipelines_limits_and_token(monkeypatch):
    monkeypatch.setenv("IPA_ENERGY_TOKEN", "from-env")
    spec, plans = from_args({"pipelines": "video", "max_image_pixels": "1000"})
    assert [p.name for p in spec.pipelines] == ["video"] and set(plans) == {"video"}
    assert spec.limits.max_image_pixels == 1000
    assert spec.control_token == "from-env"
    assert from_args({"token": "arg"})[0].control_token == "arg"


@pytest.mark.parametrize(
    "args, match",
    [
        ({"pipelines": "nope"}, "unknown pipeline 'nope'"),
        ({"tier": "giant"}, "tier 'giant'"),
        ({"colour": "red"}, "unknown argument"),
        ({"max_body_bytes": "ten"}, "invalid application arguments"),
        ({"max_body_bytes": "5"}, "invalid application arguments"),
    ],
)
def test_bad_arguments_are_clear_errors(args, match):
    with pytest.raises(SpecError, match=match):
        from_args(args)


def test_plan_file(tmp_path):
    plan = Plan(pipeline="classify", stages={"classifier": StagePlan(variant="resnet34-112-mini", batch_size=4)})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps([plan.model_dump(mode="json")]))
    _, plans = from_args({"plan": str(path), "pipelines": "all"})
    assert plans["classify"].stages["classifier"].batch_size == 4
    path.write_text(json.dumps({"pipeline": "classify", "stages": {"classifier": {"variant": "nope"}}}))
    with pytest.raises(SpecError, match="no variant 'nope'"):
        from_args({"plan": str(path), "pipelines": "all"})
    with pytest.raises(SpecError, match="cannot read plans"):
        load_plans(tmp_path / "missing.json")
