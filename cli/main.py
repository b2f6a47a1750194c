"""`ipa-energy` command line: demo, serve, apply-plan, catalog, energy, plan, profile, experiment, report, sweep, simulate."""

from __future__ import annotations

import argparse
import os
import sys

from cli import demo, energy, experiment, plan, profile, serve, simulate
from ipa_energy.errors import IpaEnergyError

__all__ = ["main"]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ipa-energy", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    for group in (demo, serve, energy, plan, profile, experiment, simulate):
        group.add_parsers(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except IpaEnergyError as e:
        print(f"ipa-energy: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
