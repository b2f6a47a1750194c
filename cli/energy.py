"""`ipa-energy energy run | import`: a command's energy in etrace2's format, or etrace2 files read back."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parsers"]


def _energy_table(measurements, config) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="energy")
    for col in ("device", "J", "mean W", "window s", "g CO2e", "method"):
        table.add_column(col, justify="right")
    for m in measurements:
        for device, joules in m.energy_j.items():
            watts = joules / m.duration_s if m.duration_s > 0 else 0.0
            label = m.method if m.measured else f"{m.method} (estimate)"
            table.add_row(device, f"{joules:.3f}", f"{watts:.2f}", f"{m.duration_s:.2f}", f"{config.carbon_g(joules):.4f}", label)
    Console(stderr=True).print(table)


def _energy_run(args: argparse.Namespace) -> int:
    from energy.config import EnergyConfig
    from energy.etrace2 import format_etrace2, measure_command
    from energy.meters.base import Measurement
    from energy.meters.select import select_meters

    command = args.command_args[1:] if args.command_args[:1] == ["--"] else args.command_args
    if not command:
        print("ipa-energy energy run: give a command after --", file=sys.stderr)
        return 2
    config = EnergyConfig(force_estimate=args.estimate)
    cpu, *others = select_meters(config)
    starts = [m.sample() for m in others]  # counter-based meters need only the two ends
    code, measurement = measure_command(command, cpu, interval_s=args.interval)
    measurements = [measurement, *(Measurement.between(a, m.sample()) for a, m in zip(starts, others))]
    for m in measurements:
        print(format_etrace2(m), end="")
    _energy_table(measurements, config)
    return code


def _energy_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from energy.config import EnergyConfig
    from energy.etrace2 import parse_etrace2

    _energy_table([parse_etrace2(Path(f).read_text()) for f in args.files], EnergyConfig())
    return 0


def add_parsers(sub) -> None:
    energy = sub.add_parser("energy", help="measure a command, or read etrace2 output").add_subparsers(
        dest="energy_command", required=True)
    run = energy.add_parser("run", help="run CMD and print its energy in etrace2's format (best meter of this node)")
    run.add_argument("--interval", type=float, default=0.5, help="sampling period (s); keeps RAPL wraparound visible")
    run.add_argument("--estimate", action="store_true", help="use the TDP estimate even where RAPL is readable")
    run.add_argument("command_args", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run.set_defaults(func=_energy_run)
    imp = energy.add_parser("import", help="read etrace2 output files (e.g. from Chameleon nodes)")
    imp.add_argument("files", nargs="+", help="etrace2 files")
    imp.set_defaults(func=_energy_import)
