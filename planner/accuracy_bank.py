"""ipa-energy's accuracy budget held over the requests served, not plan by plan.

The adaptation loop (:mod:`planner.loop`) keeps one :class:`AccuracyBank`: each step it
banks what the requests since the last step left of the budget against IPA's plan, and
plans the next interval with the budget plus what the bank adds (docs/plan-format.md, "The
accuracy budget holds over the requests served").
"""

from __future__ import annotations

import numpy as np

from planner.terms import Weights

__all__ = ["ALLOWANCE_MAX", "AccuracyBank"]

#: the most accuracy one interval of ipa-energy may give up against IPA's plan, in budgets
#: (Weights.accuracy_budget), however much earlier intervals banked
ALLOWANCE_MAX = 3.0


class AccuracyBank:
    """The accuracy (a fraction) × requests the budget left unspent (`balance`; < 0: a debt)."""

    def __init__(self, weights: Weights, policy: str, interval_s: float):
        self.weights, self.interval_s = weights, interval_s
        self.active = policy == "ipa-energy" and weights.accuracy_budget is not None \
            and weights.accuracy_window_s is not None
        self.balance = 0.0

    def account(self, history: np.ndarray, seconds: int, given_up: float,
                bridge: tuple[float, float] | None = None) -> None:
        """Bank what the last `seconds` of `history` (per-second arrivals) left of the budget.

        They were served by a plan that gave up `given_up` against IPA's plan at the load: each
        banks the budget less that (more when the plan gave up nothing: a ramp, a load only
        IPA's own plan serves; less, or a debt, when it gave up more). `bridge` (seconds,
        given up): the first of those seconds were served by a bridge, which gave up that
        much (the replicas switched in place while a change starts more).
        The bank holds at most the budget over the last ``accuracy_window_s`` of requests: a
        quiet week does not pay for a degraded day; and owes at most as much: a surge that only
        a best-effort plan could meet (IPA's program at the load then plans an accuracy nothing
        runs) does not cost the rest of the trace (22 simulated days of video at 1,000 nodes:
        one such surge left the allowance at 0 for 6,875 of 6,902 decisions)."""
        if not self.active or seconds <= 0 or not len(history):
            return
        served = np.asarray(history[-seconds:], dtype=float)
        split = min(max(int(round(bridge[0])), 0), len(served)) if bridge is not None else 0
        budget = self.weights.accuracy_budget
        banked = float(served[split:].sum()) * (budget - given_up)
        if split:
            banked += float(served[:split].sum()) * (budget - bridge[1])
        window = float(history[-int(self.weights.accuracy_window_s):].sum())
        self.balance = max(-budget * window, min(self.balance + banked, budget * window))

    def weights_for(self, load: float) -> Weights:
        """The weights of the next interval: ipa-energy's budget for it.

        A bank is spent over the requests the interval expects (at the planned `load`), so a
        saving the budget left is used where the elasticity finds one; a debt (an interval
        gave up more than was banked: the load outgrew the prediction) is repaid over the
        window, so it trims the budget a little for a while rather than forcing IPA's own plan
        for an interval and a switch back (at 5 req/s, resnet50 → resnet152 × 2 → resnet50).
        No interval gives up more than ALLOWANCE_MAX budgets: the bank of a quiet hour pays for
        a lighter variant, not for the lightest."""
        if not self.active:
            return self.weights
        budget, bank = self.weights.accuracy_budget, self.balance
        spread = self.interval_s if bank > 0 else self.weights.accuracy_window_s
        allowance = budget + bank / max(1.0, load * spread)
        allowance = min(1.0, ALLOWANCE_MAX * budget, max(0.0, allowance))
        return self.weights.model_copy(update={"accuracy_budget": allowance})
