"""Sweeps over a small list of Profiles (no catalog import, no stored files)."""

from datetime import datetime, timezone

import pytest

from experiments.sweep import CatalogView, catalog_view, sweep
from ipa_energy.spec import Accuracy, PipelineSpec, Profile, Resources, StageSpec, VariantSpec

LADDER = {"resnet/classify/mini": ["small-mini", "medium-mini", "large-mini"]}
VIEW = CatalogView(family={v: "resnet" for v in LADDER["resnet/classify/mini"]},
                   pipelines={v: {"classify"} for v in LADDER["resnet/classify/mini"]}, ladders=LADDER)


def _profile(variant, batch, hardware="cpu-x-2c", method="tdp-estimate", j=1.0):
    return Profile(variant=variant, batch_size=batch, hardware=hardware, resources=Resources(num_cpus=0.5),
                   latency_p50_ms=10.0 * batch, latency_p99_ms=12.0 * batch, throughput_rps=100.0 / batch,
                   energy_per_request_j=j, idle_power_w=0.6, energy_method=method, window_s=5.0, weights="random",
                   measured_at=datetime(2026, 11, 28, tzinfo=timezone.utc))


PROFILES = [_profile(v, b, j=(i + 1) / b) for i, v in enumerate(LADDER["resnet/classify/mini"]) for b in (1, 2, 4)]


def _png(path):
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000


def test_batch_sweep(tmp_path):
    md = sweep("batch", tmp_path, profiles=PROFILES)
    text = md.read_text()
    assert md.name == "sweep-batch.md" and "| cpu-x-2c | small-mini | 4 | 0.250 J (tdp-estimate) |" in text
    assert "not a measurement" in text
    _png(tmp_path / "sweep-batch-cpu-x-2c.png")


def test_model_sweep_follows_the_ladder(tmp_path):
    text = sweep("model", tmp_path, profiles=PROFILES, catalog=VIEW, batch_size=1).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| cpu-x-2c")]
    assert [r.split(" | ")[3] for r in rows] == ["small-mini", "medium-mini", "large-mini"]
    _png(tmp_path / "sweep-model-cpu-x-2c.png")


def test_family_filter(tmp_path):
    text = sweep("batch", tmp_path, profiles=PROFILES, catalog=VIEW, families=["qwen2.5"]).read_text()
    assert "0 stored profiles" in text and "Nothing to plot" in text


def test_hardware_sweep_side_by_side(tmp_path):
    gpu = [_profile("small-mini", 1, hardware="gpu-y", method="zeus-nvml", j=0.01)]
    text = sweep("hardware", tmp_path, profiles=PROFILES + gpu).read_text()
    assert "| variant | batch | cpu-x-2c J/request | gpu-y J/request |" in text
    assert "| small-mini | 1 | 1.00 J (tdp-estimate) | 0.0100 J (zeus-nvml) |" in text
    _png(tmp_path / "sweep-hardware.png")
    assert "Only one hardware id" in sweep("hardware", tmp_path / "one", profiles=PROFILES).read_text()


def test_method_sweep_without_a_measured_counterpart(tmp_path):
    text = sweep("method", tmp_path, profiles=PROFILES).read_text()
    assert "No comparison possible" in text and "cpu-x-2c: tdp-estimate" in text
    assert not (tmp_path / "sweep-method.png").exists()


def test_method_sweep_pairs_estimate_with_measurement(tmp_path):
    measured = _profile("small-mini", 1, method="zeus-rapl", j=0.5)
    estimate = _profile("small-mini", 1, hardware="cpu-x-2c+estimate", j=1.0)
    text = sweep("method", tmp_path, profiles=[measured, estimate]).read_text()
    assert "| cpu-x-2c | small-mini | 1 | 0.500 J (zeus-rapl) | 1.00 J | 2.00 |" in text
    _png(tmp_path / "sweep-method.png")


def test_catalog_view_ladders_in_catalog_order():
    def variant(name):
        return VariantSpec(name=name, task="classify", family="resnet", architecture="torchvision:resnet18",
                           accuracy=Accuracy(value=0.7, metric="top-1", source="x"), tier="mini", stands_for="x")

    stage = StageSpec(name="classifier", variants=(variant("b-mini"), variant("a-mini")))
    view = catalog_view([PipelineSpec(name="classify", stages=(stage,), sla_ms=100)])
    assert view.ladders == {"resnet/classify/mini": ["b-mini", "a-mini"]}
    assert view.pipelines["a-mini"] == {"classify"} and view.family["b-mini"] == "resnet"


def test_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        sweep("speed", tmp_path, profiles=PROFILES)
