"""The flags that describe a replay: Locust's parser and `ipa-energy experiment` share them."""

from __future__ import annotations

import argparse

from ipa_energy.records import TraceSpec
from loadgen.traces import parse_trace

__all__ = ["add_replay_arguments", "trace_from_arguments"]

#: Locust users, i.e. the most requests in flight at once
DEFAULT_SENDERS = 200
#: seconds after the trace's end to wait for answers
DEFAULT_DRAIN_S = 60.0


def add_replay_arguments(parser) -> None:
    """--pipeline, --trace, --seconds, --offset, --rate-factor, --seed, --senders, --drain (argparse or Locust)."""
    parser.add_argument("--pipeline", default="video", help="served pipeline to load")
    parser.add_argument("--trace", default="bursty",
                        help="Twitter window (bursty, steady_low, steady_high, fluctuating), constant:RPS, "
                             "or a per-second CSV path")
    parser.add_argument("--seconds", type=int, default=0, help="seconds of the trace to replay (0 = all)")
    parser.add_argument("--offset", type=int, default=0, help="seconds of the trace to skip first")
    parser.add_argument("--rate-factor", type=float, default=1.0,
                        help="multiply the trace's rate by this, to scale it to the machine (recorded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times within each second")
    parser.add_argument("--senders", type=int, default=DEFAULT_SENDERS,
                        help="concurrent senders (Locust users): the most requests in flight")
    parser.add_argument("--drain", type=float, default=DEFAULT_DRAIN_S,
                        help="seconds after the trace's end to wait for answers")


def trace_from_arguments(args: argparse.Namespace) -> TraceSpec:
    """The TraceSpec the replay flags name (ValueError / FileNotFoundError for a bad trace)."""
    return parse_trace(args.trace, args.seconds or None, rate_factor=args.rate_factor, offset_s=args.offset,
                       seed=args.seed)
