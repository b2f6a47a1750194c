"""Experiments: runner, result schema, summaries, reports and sweeps."""
