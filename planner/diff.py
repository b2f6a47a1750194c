"""What changes between two plans of one pipeline."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ipa_energy.spec import Plan, StagePlan

FIELDS = ("variant", "batch_size", "replicas", "batch_wait_timeout_ms")


class StageChange(BaseModel):
    pipeline: str
    stage: str
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.pipeline}.{self.stage}.{self.field}: {self.old} → {self.new}"


def diff_plans(old: Plan | None, new: Plan) -> list[StageChange]:
    """Field-by-field changes from `old` to `new` (everything is new when `old` is None)."""
    if old is not None and old.pipeline != new.pipeline:
        raise ValueError(f"cannot diff plans of different pipelines ({old.pipeline!r}, {new.pipeline!r})")
    changes = []
    for stage, sp in new.stages.items():
        before: StagePlan | None = old.stages.get(stage) if old else None
        for field in FIELDS:
            a = getattr(before, field) if before else None
            b = getattr(sp, field)
            if a != b:
                changes.append(StageChange(pipeline=new.pipeline, stage=stage, field=field, old=a, new=b))
    return changes


def switches_variant(old: Plan | None, new: Plan) -> bool:
    return any(c.field == "variant" for c in diff_plans(old, new))
