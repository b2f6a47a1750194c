"""The Twitter request trace IPA replays (per-second request counts, April 2018).

The file (``shared/data/twitter-2018-04-rps.txt.bz2``, see ``shared/data/README.md``) holds
1,899,061 whitespace-separated integers, one per second (≈ 22 days). IPA divides it by a
damping factor of 8. Seconds with a count of 0 are missing data in the archive (runs of
~1,739 s about once a day plus short gaps), not idle seconds.

Damping here is a float division (3.375 RPS stays 3.375), which is what the data README's
RPS ranges use; IPA's ``barazmoon.twitter.twitter_workload_generator`` truncates with
``int(l / damping_factor)`` instead.
"""

from __future__ import annotations

import bz2
import os
from functools import lru_cache
from pathlib import Path
from typing import Union

import numpy as np

ENV_VAR = "IPA_ENERGY_TRACE"
#: <repo root>/../shared/data/... (parents[2] of this file); $IPA_ENERGY_TRACE overrides it
#: at call time in ``load_trace``.
DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared/data/twitter-2018-04-rps.txt.bz2"
DAMPING = 8.0
SECONDS_PER_DAY = 86400

Span = tuple[int, int]

#: IPA's named windows, second indices [start, end) into the undamped-length trace (from
#: shared/data/README.md). ``fluctuating`` is two spans played back to back.
#: ``steady_high`` is 600 s; IPA plays it twice (``window(..., repeat=2)`` if wanted).
WINDOWS: dict[str, Union[Span, tuple[Span, ...]]] = {
    "bursty": (1301160, 1302360),
    "steady_low": (1299600, 1300800),
    "steady_high": (1768800, 1769400),
    "fluctuating": ((1301400, 1302000), (1308600, 1309200)),
}


def spans(name: str) -> list[Span]:
    """The window ``name`` as a list of (start, end) spans."""
    try:
        w = WINDOWS[name]
    except KeyError:
        raise KeyError(f"unknown trace window {name!r}; known: {sorted(WINDOWS)}") from None
    if isinstance(w[0], tuple):
        return [tuple(s) for s in w]  # type: ignore[misc]
    return [tuple(w)]  # type: ignore[list-item]


@lru_cache(maxsize=4)
def _load(path: str, damping: float) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"Twitter trace not found at {p}. Expected shared/data/"
            f"twitter-2018-04-rps.txt.bz2 next to the repository (see shared/data/README.md) "
            f"or a path in ${ENV_VAR}."
        )
    opener = bz2.open if p.suffix == ".bz2" else open
    with opener(p, "rb") as f:
        raw = f.read()
    arr = np.array(raw.split(), dtype=np.float64)
    if damping != 1.0:
        arr /= float(damping)
    arr.setflags(write=False)  # shared cached array: callers must copy to modify
    return arr


def load_trace(path: Union[str, Path, None] = None, damping: float = DAMPING) -> np.ndarray:
    """Per-second RPS (float64, read-only, cached) of the trace divided by ``damping``.

    ``path`` None means ``$IPA_ENERGY_TRACE`` if set, else ``DEFAULT_TRACE``.
    """
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_TRACE
    return _load(str(Path(path).resolve()), float(damping))


def window(name: str, trace: np.ndarray | None = None, repeat: int = 1) -> np.ndarray:
    """Per-second RPS of IPA's named window (spans concatenated, optionally repeated)."""
    if trace is None:
        trace = load_trace()
    parts = []
    for start, end in spans(name):
        if end > len(trace):
            raise ValueError(f"window {name!r} ends at {end} > trace length {len(trace)}")
        parts.append(np.asarray(trace[start:end], dtype=np.float64))
    out = np.concatenate(parts)
    return np.tile(out, repeat) if repeat != 1 else out
