"""Load traces: IPA's Twitter trace and its windows, constant rates, per-second CSVs → arrival times.

A trace is a per-second rate (req/s): one of IPA's Twitter windows (damped by 8, as IPA),
a constant rate, or any per-second CSV. The rate factor scales it to the machine. Counts
per second are rounded with carry (the running total is rounded, not each second), so a
window keeps its total and every second is within one request of the scaled rate. Within a
second, arrivals are spread with exponential gaps, as IPA's load generator does.

The Twitter trace (``shared/data/twitter-2018-04-rps.txt.bz2``, see ``shared/data/README.md``)
holds 1,899,061 whitespace-separated integers, one per second (≈ 22 days); :func:`load_trace`
reads it (the LSTM predictor trains on it). Seconds with a count of 0 are missing data in the
archive (runs of ~1,739 s about once a day plus short gaps), not idle seconds. Damping is a
float division (3.375 RPS stays 3.375), which is what the data README's RPS ranges use; IPA's
``barazmoon.twitter.twitter_workload_generator`` truncates with ``int(l / damping_factor)``.

IPA's four windows also ship in ``loadgen/data/twitter_windows.csv`` (raw per-second counts,
cut from the full trace with :func:`window`), so replays work without the 22-day file.
"""

from __future__ import annotations

import bz2
import csv
import os
from functools import lru_cache
from pathlib import Path
from typing import Union

import numpy as np

from ipa_energy.records import TraceSpec

__all__ = [
    "DAMPING", "DEFAULT_TRACE", "ENV_VAR", "FULL", "WINDOWS", "arrival_times", "counts", "full", "load_trace", "parse_trace", "rates",
    "read_rate_csv", "schedule", "spans", "twitter", "twitter_windows", "window",
]

ENV_VAR = "IPA_ENERGY_TRACE"
#: <repo root>/../shared/data/... (parents[2] of this file); $IPA_ENERGY_TRACE overrides it
#: at call time in ``load_trace``.
DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared/data/twitter-2018-04-rps.txt.bz2"
WINDOWS_CSV = Path(__file__).parent / "data" / "twitter_windows.csv"
#: IPA divides the Twitter trace by 8
DAMPING = 8.0
#: the name of the whole Twitter trace (``--trace full``), beside IPA's windows
FULL = "full"

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


# ------------------------------------------------------------------------------------------
# The full Twitter trace
# ------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------
# Replayable traces
# ------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def twitter_windows() -> dict[str, np.ndarray]:
    """Raw (undamped) per-second counts of IPA's windows."""
    out: dict[str, list[int]] = {}
    with WINDOWS_CSV.open() as f:
        for row in csv.DictReader(f):
            out.setdefault(row["window"], []).append(int(row["count"]))
    return {name: np.asarray(v, dtype=float) for name, v in out.items()}


def read_rate_csv(path: str | Path) -> np.ndarray:
    """Per-second rates from a CSV: one number per line, or a header with a `rps`/`count` column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace CSV not found: {path}")
    with path.open() as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip() and not r[0].startswith("#")]
    if not rows:
        raise ValueError(f"{path}: no rows")
    col = 0
    try:
        float(rows[0][0])
    except ValueError:  # a header: pick the rate column
        header = [h.strip().lower() for h in rows.pop(0)]
        names = [n for n in ("rps", "rate", "count", "requests") if n in header]
        col = header.index(names[0]) if names else len(header) - 1
    try:
        rates = np.array([float(r[col]) for r in rows])
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: not a per-second rate column ({e})") from None
    if (rates < 0).any() or not np.isfinite(rates).all():
        raise ValueError(f"{path}: rates must be finite and ≥ 0")
    return rates


def twitter(name: str, seconds: int | None = None, *, offset_s: int = 0, rate_factor: float = 1.0, seed: int = 0) -> TraceSpec:
    """The TraceSpec of IPA's Twitter window `name` (whole window unless `seconds`)."""
    windows = twitter_windows()
    if name not in windows:
        raise ValueError(f"unknown Twitter window {name!r}; known: {sorted(windows)}")
    length = len(windows[name]) - offset_s
    if length <= 0:
        raise ValueError(f"offset {offset_s} s is past the end of window {name!r} ({len(windows[name])} s)")
    return TraceSpec(kind="twitter", name=name, start_s=spans(name)[0][0], offset_s=offset_s,
                     seconds=min(seconds or length, length), rate_factor=rate_factor, damping=DAMPING, seed=seed)


def full(seconds: int | None = None, *, offset_s: int = 0, rate_factor: float = 1.0, seed: int = 0) -> TraceSpec:
    """The TraceSpec of the whole Twitter trace (shared/data, 22 days), from `offset_s`."""
    length = len(load_trace(damping=1.0)) - offset_s
    if length <= 0:
        raise ValueError(f"offset {offset_s} s is past the end of the Twitter trace")
    return TraceSpec(kind="twitter", name=FULL, start_s=0, offset_s=offset_s, seconds=min(seconds or length, length),
                     rate_factor=rate_factor, damping=DAMPING, seed=seed)


def parse_trace(text: str, seconds: int | None = None, *, rate_factor: float = 1.0, offset_s: int = 0, seed: int = 0) -> TraceSpec:
    """`bursty` / `steady_low` / ... , `full` (the whole Twitter trace), `constant:RPS`, or a CSV path → TraceSpec."""
    if text.startswith("constant:"):
        try:
            rps = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad constant trace {text!r}: want constant:RPS, e.g. constant:5") from None
        if rps <= 0 or seconds is None:
            raise ValueError("a constant trace needs a rate > 0 and a duration (seconds)")
        return TraceSpec(kind="constant", name="constant", rate_rps=rps, seconds=seconds, rate_factor=rate_factor, seed=seed)
    if text == FULL:
        return full(seconds, offset_s=offset_s, rate_factor=rate_factor, seed=seed)
    if text in twitter_windows():
        return twitter(text, seconds, offset_s=offset_s, rate_factor=rate_factor, seed=seed)
    if text.endswith(".csv") or Path(text).is_file():
        rates = read_rate_csv(text)[offset_s:]
        if not len(rates):
            raise ValueError(f"{text}: nothing left after the offset of {offset_s} s")
        return TraceSpec(kind="csv", name=Path(text).name, path=str(Path(text).resolve()), offset_s=offset_s,
                         seconds=min(seconds or len(rates), len(rates)), rate_factor=rate_factor, seed=seed)
    raise ValueError(f"unknown trace {text!r}: a Twitter window {sorted(twitter_windows())}, {FULL!r} (the whole "
                     "Twitter trace), constant:RPS or a CSV path")


def rates(trace: TraceSpec) -> np.ndarray:
    """Offered load per second (req/s) after damping and the rate factor."""
    if trace.kind == "constant":
        base = np.full(trace.seconds, float(trace.rate_rps or 0.0))
    elif trace.kind == "twitter" and trace.name == FULL:
        base = load_trace(damping=1.0)[trace.offset_s: trace.offset_s + trace.seconds]
    elif trace.kind == "twitter":
        base = twitter_windows()[trace.name][trace.offset_s: trace.offset_s + trace.seconds]
    else:
        base = read_rate_csv(trace.path or trace.name)[trace.offset_s: trace.offset_s + trace.seconds]
    return base / trace.damping * trace.rate_factor


def counts(per_second_rps: np.ndarray) -> np.ndarray:
    """Integer arrivals per second: the rounded running total, so nothing drifts."""
    total = np.rint(np.cumsum(per_second_rps)).astype(int)
    return np.diff(total, prepend=0)


def arrival_times(per_second_counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Send times (s from the start), `counts[i]` of them inside second i, exponential gaps."""
    rng = np.random.default_rng(seed)
    out = []
    for second, n in enumerate(per_second_counts):
        if n <= 0:
            continue
        gaps = rng.exponential(1.0, n + 1)  # n arrivals and the gap to the end of the second
        out.append(second + np.cumsum(gaps)[:n] / gaps.sum())
    return np.concatenate(out) if out else np.zeros(0)


def schedule(trace: TraceSpec) -> tuple[np.ndarray, np.ndarray]:
    """(per-second counts, arrival times) of a trace."""
    c = counts(rates(trace))
    return c, arrival_times(c, trace.seed)
