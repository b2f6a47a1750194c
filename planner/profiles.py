"""The profiles the planner plans with: the (variant, batch) lookup (which hardware id:
:func:`workloads.profile_store.planning_hardware`).

Measured profiles come from the profile store (workloads/profiles/<hardware>.json); batch
sizes that were not measured are filled with IPA's quadratic latency fit (``fitted=True``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ipa_energy.spec import PipelineSpec, Profile
from planner.constants import DEFAULT_BATCH_SIZES

logger = logging.getLogger(__name__)

__all__ = ["fill_profiles", "profiles_from_store"]


def profiles_from_store(store: Any, hardware: str | None, pipeline: PipelineSpec,
                        batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES) -> dict[tuple[str, int], Profile]:
    """Profiles of every variant of `pipeline` at each batch size (≤ its max_batch_size).

    Measured profiles are used as they are; missing batch sizes are filled with
    ``workloads.profile_store.predict_profile`` (IPA's quadratic latency fit, ``fitted=True``).
    Variants with no measured profile on `hardware` are left out (the planner cannot pick
    them); so are batch sizes the fit cannot produce.
    """
    return fill_profiles(pipeline, store.load(hardware), batch_sizes)


def fill_profiles(pipeline: PipelineSpec, measured: Iterable[Profile],
                  batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES) -> dict[tuple[str, int], Profile]:
    """`measured` profiles (of one hardware id) as the lookup `optimize` takes, fitted as above."""
    from workloads.profile_store import predict_profile

    by_variant: dict[str, list[Profile]] = {}
    for p in measured:
        by_variant.setdefault(p.variant, []).append(p)
    out: dict[tuple[str, int], Profile] = {}
    for stage in pipeline.stages:
        for v in stage.variants:
            series = by_variant.get(v.name)
            if not series:
                continue
            for b in dict.fromkeys(int(b) for b in batch_sizes):
                if b < 1 or b > v.max_batch_size:
                    continue
                try:
                    out[(v.name, b)] = predict_profile(series, b)[0]
                except Exception as e:  # e.g. too few measured sizes to fit
                    logger.debug("no profile for %s batch %d: %s", v.name, b, e)
    return out
