"""cluster.yaml validates offline against Ray's own cluster schema."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def load():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_is_valid():
    config = prepare_config(load())
    validate_config(config)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, "cluster.yaml must offer GPU worker nodes"
    assert all("resources" in t for t in types.values()), "explicit resources keep validation offline"
    assert any("make install" in cmd for cmd in config["setup_commands"])


def test_schema_rejects_a_broken_config():
    config = load()
    config["available_node_types"]["head"]["resources"] = "lots"
    with pytest.raises(Exception, match="not of type 'object'"):
        validate_config(prepare_config(config))
