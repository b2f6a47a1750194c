import shutil
from pathlib import Path

import pytest

SYNTHETIC = Path(__file__).resolve().parents[2] / "fixtures" / "runs" / "synthetic"


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """A private copy of the synthetic experiment (reports write summary.json into run folders)."""
    return Path(shutil.copytree(SYNTHETIC, tmp_path / "synthetic"))
