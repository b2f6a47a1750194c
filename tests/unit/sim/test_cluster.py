"""Cluster files for the simulator: node types, units, power, and clear errors."""

import pytest

from sim.cluster import load_cluster, node_power
from workloads import catalog
from planner.profiles import profiles_from_store
from workloads.profile_store import PROFILES_DIR, ProfileStore

YAML = """
hardware: cpu-amd-epyc-2c
idle_timeout_minutes: 2
host: {background_cores: 0.5, loadgen_cpu_s: 0.01}
available_node_types:
  small:
    count: 1000
    min_workers: 2
    resources: {CPU: 2, memory: 8GiB}
  gpu:
    max_workers: 3
    resources: {CPU: 4, memory: 16384MiB, GPU: 1, gpu_memory: 24GiB}
    power: {idle_w: 60}
    speed: 0.5
"""


def test_a_cluster_file_reads_node_types_units_and_host_costs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    c = load_cluster(path)
    small, gpu = c.node_types
    assert (small.count, small.min_workers, small.cores, small.memory_mb) == (1000, 2, 2.0, 8192.0)
    assert (gpu.count, gpu.gpus, gpu.gpu_memory_mb, gpu.idle_w, gpu.speed) == (3, 1, 24576.0, 60.0, 0.5)
    assert c.idle_timeout_s == 120.0 and c.host.background_cores == 0.5 and c.host.loadgen_cpu_s == 0.01
    supply = c.supply()
    assert len(supply.nodes) == 1003 and supply.cores == 2 * 1000 + 4 * 3
    assert supply.nodes[-1].gpus[0].memory_mb == 24576.0


@pytest.mark.parametrize("text, error", [
    ("nodes: []", "available_node_types"),
    ("hardware: x\navailable_node_types: {a: {resources: {CPU: 2}}}", "resources.CPU and resources.memory"),
    ("hardware: x\navailable_node_types: {a: {resources: {CPU: 2, memory: lots}}}", "memory 'lots'"),
    ("hardware: x\navailable_node_types: {a: {count: 1, min_workers: 3, resources: {CPU: 2, memory: 1GiB}}}", "min_workers"),
    ("available_node_types: {a: {resources: {CPU: 2, memory: 1GiB}}}", "hardware id"),
    ("hardware: x\navailable_node_types: {a: {resources: {CPU: 2, memory: 1GiB, GPU: 1}}}", "gpu_memory"),
    (": [", "cluster file"),
])
def test_a_bad_cluster_file_names_what_is_wrong(tmp_path, text, error):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_cluster(path)


def test_node_power_comes_from_the_profiles_unless_given(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    small, gpu = load_cluster(path).node_types
    pipeline = catalog.pipeline("classify")
    profiles = profiles_from_store(ProfileStore(PROFILES_DIR), "cpu-amd-epyc-2c", pipeline)
    idle, active = node_power(small, profiles, pipeline)
    # the mini profiles: 0.6 W idle for a 0.5-CPU replica's share, ~2.8 J per busy core-second
    assert idle == pytest.approx(2 * 0.6 / 0.5)
    assert 1.0 < active < 6.0
    assert node_power(gpu, profiles, pipeline)[0] == 60.0


def test_simulated_labels_wrap_a_method_and_are_never_measurements():
    from pydantic import TypeAdapter

    from ipa_energy.energy import MethodLabel, base_methods, is_measured, is_simulated, join_methods, simulated

    label = simulated("tdp-estimate+zeus-nvml")
    assert TypeAdapter(MethodLabel).validate_python(label) == label
    assert base_methods(label) == ["tdp-estimate", "zeus-nvml"] and is_simulated(label)
    assert not is_measured(simulated("zeus-nvml"))
    assert join_methods([label, label]) == label
    for bad in ("simulated (watts)", "simulated (simulated (tdp-estimate))", "simulated tdp-estimate"):
        with pytest.raises(ValueError):
            TypeAdapter(MethodLabel).validate_python(bad)


def test_hidden_cores_beyond_the_background_are_refused():
    from sim.cluster import HostCosts

    assert HostCosts(background_cores=0.8, hidden_cores=0.3).hidden_cores == 0.3
    with pytest.raises(ValueError, match="hidden_cores"):
        HostCosts(background_cores=0.2, hidden_cores=0.3)
