"""Model variants: catalog, builders, task runners, payload generators."""
