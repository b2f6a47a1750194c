"""Experiments: the runner (policies one after another on one trace), the result schema,
summaries, reports with plots, and sweeps over the stored profiles."""
