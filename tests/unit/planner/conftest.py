"""The planner tests' shared fixture: `setup`, the classify pipeline with the real mini profiles
(a test module's own `setup` takes its place there)."""

import pytest

from tests.unit.planner.loop_helpers import classify_setup


@pytest.fixture(scope="module")
def setup():
    return classify_setup()
