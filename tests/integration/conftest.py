"""One local Ray cluster and one served app for the whole integration suite."""

import socket

import httpx
import pytest
import ray
from ray import serve

from ipa_energy.spec import PipelineSpec, StageSpec
from serve_app import control
from serve_app.config import AppSpec
from serve_app.requests import Limits
from workloads import catalog

TOKEN = "test-token"
LIMITS = Limits(max_body_bytes=600_000, max_image_pixels=400 * 400, max_prompt_chars=200, max_new_tokens=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fragile_pipeline() -> PipelineSpec:
    """A classifier stage whose second variant cannot load (its checkpoint is missing)."""
    good = catalog.pipeline("classify").stage("classifier").variant("resnet18-112-mini")
    broken = good.model_copy(update={"name": "broken-mini", "checkpoint": "/nonexistent/weights.pt"})
    return PipelineSpec(name="fragile", sla_ms=1000, stages=(StageSpec(name="classifier", variants=(good, broken)),))


METRICS_PORT = free_port()


@pytest.fixture(scope="session")
def cluster():
    control.node_environment()
    ray.init(
        num_cpus=12,  # logical: each mini replica reserves 0.5; plan changes run old and new at once
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=METRICS_PORT,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def app_spec() -> AppSpec:
    return AppSpec(
        pipelines=(*catalog.pipelines().values(), fragile_pipeline()),
        limits=LIMITS,
        control_token=TOKEN,
        # the shared app's tests are of switches that build (a kill in the middle of one, a variant that
        # fails to load in place); warm variants have their own app (test_warm.py)
        warm_variants=False,
    )


@pytest.fixture(scope="session")
def base_url(cluster, app_spec) -> str:
    control.deploy(app_spec)
    return cluster


@pytest.fixture()
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as client:
        yield client
