"""The mini-tier profiles shipped in workloads/profiles were measured, and make sense."""

import pytest

from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore

FILES = sorted(PROFILES_DIR.glob("cpu-*.json"))
MINI = {v.name: v for p in catalog.pipelines("mini").values() for s in p.stages for v in s.variants}


def test_a_cpu_profile_file_ships():
    assert FILES, f"no CPU profiles in {PROFILES_DIR}"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_mini_variant_is_profiled_at_1_2_4_8(path):
    profiles = ProfileStore(PROFILES_DIR).load(path.stem)
    have = {(p.variant, p.batch_size) for p in profiles}
    for name, variant in MINI.items():
        for b in (1, 2, 4, 8):
            if b <= variant.max_batch_size:
                assert (name, b) in have, (name, b)
    for p in profiles:
        assert p.hardware == path.stem and p.weights == "random"
        assert p.latency_p99_ms >= p.latency_p50_ms > 0 and p.throughput_rps > 0 and p.window_s >= 1
        assert p.energy_method in ("tdp-estimate", "rapl-sysfs", "zeus-rapl", "zeus-nvml")


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
@pytest.mark.parametrize("pipeline, stage", [("classify", "classifier"), ("video", "classifier"), ("llm", "generator"),
                                             ("sam", "segmenter"), ("sam-grounded", "segmenter")])
def test_latency_grows_with_model_size_within_a_family(path, pipeline, stage):
    store = ProfileStore(PROFILES_DIR)
    ladder = [v.name for v in catalog.pipeline(pipeline, "mini").stage(stage).variants]  # smallest first
    latency = [store.get(name, 1, hardware=path.stem).latency_p50_ms for name in ladder]
    assert latency == sorted(latency), dict(zip(ladder, latency))
