"""Which hardware id the planner plans (and the plan controller admits plans) with."""

import pytest

from workloads.profile_store import ProfileStore, planning_hardware


def test_planning_hardware_falls_back_to_the_shipped_cpu_class(tmp_path):
    (tmp_path / "cpu-b-2c.json").write_text("{}")
    (tmp_path / "cpu-a-2c.json").write_text("{}")
    store = ProfileStore(tmp_path)
    assert planning_hardware(store, "cpu-b-2c") == ("cpu-b-2c", None)
    hardware, warning = planning_hardware(store, "gpu-nvidia-h200")
    assert hardware == "cpu-a-2c" and "no profiles for gpu-nvidia-h200" in warning
    with pytest.raises(FileNotFoundError, match="no CPU profiles"):
        planning_hardware(ProfileStore(tmp_path / "empty"), "cpu-x")
