"""What changes between two plans of one pipeline."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ipa_energy.spec import Plan, StagePlan

__all__ = ["FIELDS", "StageChange", "diff_plans", "switches_variant"]

FIELDS = ("variant", "batch_size", "replicas", "batch_wait_timeout_ms", "mix", "autoscaling")


class StageChange(BaseModel):
    pipeline: str
    stage: str
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.pipeline}.{self.stage}.{self.field}: {self.old} → {self.new}"


def _value(sp: StagePlan | None, field: str) -> Any:
    """The field as the change shows it: a mix as `70.0% a×2@b4 + 30.0% b×1@b1`, autoscaling as `1..4@2`."""
    value = getattr(sp, field) if sp is not None else None
    if value is None:
        return None
    if field == "mix":
        return " + ".join(f"{m.share:.1%} {m.variant}×{m.replicas}@b{m.batch_size}" for m in value)
    if field == "autoscaling":
        return f"{value.min_replicas}..{value.max_replicas}@{value.target_ongoing_requests:g}"
    return value


def diff_plans(old: Plan | None, new: Plan) -> list[StageChange]:
    """Field-by-field changes from `old` to `new` (everything is new when `old` is None).

    A change of a variant mix (members, shares or a member's batching or replicas) is one
    `mix` change; so is a mix appearing or going away.
    """
    if old is not None and old.pipeline != new.pipeline:
        raise ValueError(f"cannot diff plans of different pipelines ({old.pipeline!r}, {new.pipeline!r})")
    changes = []
    for stage, sp in new.stages.items():
        before: StagePlan | None = old.stages.get(stage) if old else None
        for field in FIELDS:
            if (getattr(before, field) if before else None) != getattr(sp, field):
                changes.append(StageChange(pipeline=new.pipeline, stage=stage, field=field,
                                           old=_value(before, field), new=_value(sp, field)))
    return changes


def switches_variant(old: Plan | None, new: Plan) -> bool:
    return any(c.field in ("variant", "mix") for c in diff_plans(old, new))
