"""Load traces → per-second request counts → arrival times, as IPA replays them.

A trace is a per-second rate (req/s): one of IPA's Twitter windows (damped by 8, as IPA),
a constant rate, or any per-second CSV. The rate factor scales it to the machine. Counts
per second are rounded with carry (the running total is rounded, not each second), so a
window keeps its total and every second is within one request of the scaled rate. Within a
second, arrivals are spread with exponential gaps, as IPA's load generator does.

The Twitter windows ship in ``loadgen/data/twitter_windows.csv`` (raw per-second counts of
the four windows of ``shared/data/README.md``), so replays work without the 22-day trace;
``twitter_windows.csv`` was cut from ``twitter-2018-04-rps.txt.bz2`` by ``planner.trace``.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from experiments.schema import TraceSpec

WINDOWS_CSV = Path(__file__).parent / "data" / "twitter_windows.csv"
TWITTER_DAMPING = 8.0
#: first second of each window in the full trace (shared/data/README.md); fluctuating is two spans
WINDOW_START = {"bursty": 1301160, "steady_low": 1299600, "steady_high": 1768800, "fluctuating": 1301400}


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
    return TraceSpec(kind="twitter", name=name, start_s=WINDOW_START[name], offset_s=offset_s,
                     seconds=min(seconds or length, length), rate_factor=rate_factor, damping=TWITTER_DAMPING, seed=seed)


def parse_trace(text: str, seconds: int | None = None, *, rate_factor: float = 1.0, offset_s: int = 0, seed: int = 0) -> TraceSpec:
    """`bursty` / `steady_low` / ... , `constant:RPS`, or a CSV path → TraceSpec."""
    if text.startswith("constant:"):
        try:
            rps = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad constant trace {text!r}: want constant:RPS, e.g. constant:5") from None
        if rps <= 0 or seconds is None:
            raise ValueError("a constant trace needs a rate > 0 and a duration (seconds)")
        return TraceSpec(kind="constant", name="constant", rate_rps=rps, seconds=seconds, rate_factor=rate_factor, seed=seed)
    if text in twitter_windows():
        return twitter(text, seconds, offset_s=offset_s, rate_factor=rate_factor, seed=seed)
    if text.endswith(".csv") or Path(text).is_file():
        rates = read_rate_csv(text)[offset_s:]
        if not len(rates):
            raise ValueError(f"{text}: nothing left after the offset of {offset_s} s")
        return TraceSpec(kind="csv", name=Path(text).name, path=str(Path(text).resolve()), offset_s=offset_s,
                         seconds=min(seconds or len(rates), len(rates)), rate_factor=rate_factor, seed=seed)
    raise ValueError(f"unknown trace {text!r}: a Twitter window {sorted(twitter_windows())}, constant:RPS or a CSV path")


def rates(trace: TraceSpec) -> np.ndarray:
    """Offered load per second (req/s) after damping and the rate factor."""
    if trace.kind == "constant":
        base = np.full(trace.seconds, float(trace.rate_rps or 0.0))
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
