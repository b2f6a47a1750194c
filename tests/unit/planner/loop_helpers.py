"""What the adaptation loop's tests share: the classify pipeline with the real mini profiles,
a loop with no Ray, a clock the tests move, a predictor that says one number."""

from ipa_energy.records import Decision
from planner.loop import PlannerLoop
from planner.predictor import MaxPredictor
from planner.profiles import profiles_from_store
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore

HARDWARE = "cpu-amd-epyc-2c"


def classify_setup():
    """The classify pipeline and its profiles on this project's 2-core CPU host."""
    pipeline = catalog.pipeline("classify")
    return pipeline, profiles_from_store(ProfileStore(PROFILES_DIR), HARDWARE, pipeline)

def loop(setup, applied, fail=False, **kw):
    pipeline, profiles = setup

    def apply(plan):
        if fail:
            raise RuntimeError("cluster busy")
        applied.append(plan)
        return {}

    return PlannerLoop(pipeline, profiles, MaxPredictor(), apply, interval_s=10, **kw)

def settled(planner: PlannerLoop, history) -> Decision:
    """One step, and a second if the first held an optional variant switch (it must be chosen twice)."""
    d = planner.step(history)
    return planner.step(history) if d.deferred else d

class Biased:
    """A predictor that says 4 req/s whatever it sees (IPA's LSTM on an all-zero window does)."""

    def predict(self, history):
        return 4.0

class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t
