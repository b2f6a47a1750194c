"""The planner's decision log, kept where a restarted planner finds it.

Ray restarts a planner actor that died (planner.actor); without this, the restarted one began
a new, empty log and forgot what the loop had learnt (cold starts, correction factors, the
recommendations a held scale-in waits on): the run's decision log lost every row before the
restart. The journal writes each decision under its own key when it is logged and again when
its apply ends (the same key: a row is never written twice), and the loop's learnt state after
each step. A restarted planner reads them back and goes on from the next index.

A decision the old planner was applying when it died is closed on restore: `changed` says
whether the running plan is the one it chose (the plan controller finishes or rolls back a
change on its own), and `error` says that the planner restarted meanwhile.
"""

from __future__ import annotations

import logging
import time

from ipa_energy.records import Decision
from planner.loop import DECISIONS_KEPT
from ipa_energy.spec import Plan
from ipa_energy.state import StateStore, load_json, save_json

__all__ = ["PlannerJournal", "RESTARTED"]

logger = logging.getLogger(__name__)

#: `Decision.error` of a decision whose apply the planner's restart interrupted
RESTARTED = "planner restarted while this change was being applied"


def _chosen(decision: Decision, plan: Plan | None) -> bool:
    """Whether `plan` runs what `decision` chose (variant, batch and replicas per stage)."""
    if plan is None:
        return False
    running = {s: sp.model_dump(mode="json", include={"variant", "batch_size", "replicas", "mix"})
               for s, sp in plan.stages.items()}
    return running == decision.stages


class PlannerJournal:
    """One planner's log in a :class:`~ipa_energy.state.StateStore`, under `planner/<app>/<pipeline>/`."""

    def __init__(self, store: StateStore, app_name: str, pipeline: str, keep: int = DECISIONS_KEPT):
        self.store = store
        self.prefix = f"planner/{app_name}/{pipeline}/"
        self.keep = keep  # decisions kept: the loop's own bound

    def _key(self, index: int) -> str:
        return f"{self.prefix}decision/{index:09d}"

    def record(self, index: int, decision: Decision) -> None:
        self.store.put(self._key(index), decision.model_dump_json().encode())
        if index >= self.keep:
            self.store.remove(self._key(index - self.keep))  # the one the loop dropped with this row

    def save_state(self, state: dict) -> None:
        save_json(self.store, self.prefix + "state", state)

    def load(self, running: Plan | None, now_s: float | None = None) -> tuple[list[Decision], dict | None, int]:
        """(the log, the learnt state, the index of the log's first row), with an interrupted
        apply closed against `running`."""
        decisions, read = [], []
        keys = self.store.keys(self.prefix + "decision/")[-self.keep:]
        for key in keys:
            raw = self.store.get(key)
            if raw is None:
                continue
            try:
                decisions.append(Decision.model_validate_json(raw))
                read.append(key)
            except ValueError as e:  # one unreadable row must not stop the planner
                logger.error("planner journal: %s unreadable (%s); left out", key, e)
        if decisions and read[-1] == keys[-1] and decisions[-1].changed and decisions[-1].apply_s is None:
            last = decisions[-1]
            last.changed = _chosen(last, running)
            last.apply_s = max(0.0, (now_s if now_s is not None else time.time()) - last.time_s)
            last.error = RESTARTED
            self.store.put(keys[-1], last.model_dump_json().encode())
        # the next row goes after the last key (an unreadable row left out keeps its index)
        first = int(keys[-1].rsplit("/", 1)[1]) + 1 - len(decisions) if keys else 0
        return decisions, load_json(self.store, self.prefix + "state"), first

    def clear(self) -> int:
        """Forget this planner's log (a planner started afresh, not restarted, begins a new one)."""
        return self.store.delete(self.prefix)
