"""The plans each compared policy starts from (shipped mini profiles, no Ray)."""

import pytest

from planner.baselines import initial_plan
from planner.policies import COMPARISON, parse_policies, policy_kind
from planner.profiles import profiles_from_store
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore


@pytest.fixture(scope="module")
def classify():
    pipeline = catalog.pipeline("classify")
    return pipeline, profiles_from_store(ProfileStore(PROFILES_DIR), "cpu-amd-epyc-2c", pipeline)


def test_parse_policies():
    assert parse_policies("all") == list(COMPARISON) and "infadapter" not in COMPARISON
    assert parse_policies(" ipa , rim ") == ["ipa", "rim"]
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policies("ipa,nope")
    assert [policy_kind(p) for p in ("rim", "static-min-energy", "serve-autoscaling")] == ["planner", "static", "serve-autoscaling"]


def test_static_policies_pin_the_extreme_variant_and_provision_for_the_peak(classify):
    pipeline, profiles = classify
    accurate = initial_plan("static-max-accuracy", pipeline, profiles, mean_rps=2, peak_rps=12, max_replicas=4)
    frugal = initial_plan("static-min-energy", pipeline, profiles, mean_rps=2, peak_rps=12, max_replicas=4)
    assert accurate.stages["classifier"].variant == "resnet152-112-mini"
    assert frugal.stages["classifier"].variant == "resnet18-112-mini"
    sp = accurate.stages["classifier"]  # sized for 12 req/s, not the mean of 2
    assert sp.replicas * profiles[(sp.variant, sp.batch_size)].throughput_rps >= 12
    assert accurate.policy == "static-max-accuracy"


def test_autoscaling_baseline_fixes_ipas_variants_and_lets_serve_scale(classify):
    pipeline, profiles = classify
    plan = initial_plan("serve-autoscaling", pipeline, profiles, mean_rps=3, peak_rps=12, max_replicas=3)
    sp = plan.stages["classifier"]
    assert sp.autoscaling is not None and (sp.autoscaling.min_replicas, sp.autoscaling.max_replicas) == (1, 3)
    assert sp.autoscaling.upscale_delay_s == 5.0
    # it sees the load on the planner's time scale: averaged over an interval, reported every second
    assert (sp.autoscaling.look_back_period_s, sp.autoscaling.metrics_interval_s) == (10.0, 1.0)
    # the variant and batch IPA picks for the peak, which the replica cap carries; not the
    # opening load's, which it may not (resnet152 at 1.8 req/s, but at 10 req/s on 2 replicas?)
    ipa = initial_plan("ipa", pipeline, profiles, mean_rps=12, peak_rps=12, max_replicas=3)
    assert (sp.variant, sp.batch_size) == (ipa.stages["classifier"].variant, ipa.stages["classifier"].batch_size)
    assert sp.autoscaling.max_replicas * profiles[(sp.variant, sp.batch_size)].throughput_rps >= 12
    # Serve starts at the replicas the opening load needs, then scales
    busy = initial_plan("serve-autoscaling", pipeline, profiles, mean_rps=11, peak_rps=12, max_replicas=3)
    assert sp.replicas == 1 and busy.stages["classifier"].replicas > 1
    # a peak nothing serves: the opening load's variants
    opening = initial_plan("ipa", pipeline, profiles, mean_rps=3, peak_rps=3, max_replicas=3)
    swamped = initial_plan("serve-autoscaling", pipeline, profiles, mean_rps=3, peak_rps=10_000, max_replicas=3)
    assert swamped.stages["classifier"].variant == opening.stages["classifier"].variant
