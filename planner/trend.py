"""The trend of the arrivals: a ramp ahead of the load predictor (planner.loop plans for it)."""

from __future__ import annotations

import numpy as np

from planner.constants import TREND_WINDOW_S

__all__ = ["trend_rps"]


def trend_rps(history: np.ndarray, horizon_s: float, window_s: int = TREND_WINDOW_S) -> float:
    """The least-squares line through the last `window_s` per-second arrivals, `horizon_s` past the last (≥ 0).

    A ramp the predictor has not caught up with yet (IPA's LSTM sees 10 s slice maxima and
    forecasts 20 s, not the cold start of a replica beyond it) still raises the plan's load.
    The line is extrapolated no further than the window it was fitted to: a burst of a few
    seconds is a steep slope, and at a long interval (the simulator's scale runs step every
    300 s) carried 300 s on it asked for ten times the load.
    """
    h = np.asarray(history, dtype=float)[-int(window_s):]
    if len(h) < 10:
        return 0.0
    slope, intercept = np.polyfit(np.arange(len(h)), h, 1)
    return max(0.0, float(intercept + slope * (len(h) - 1 + min(horizon_s, len(h)))))
