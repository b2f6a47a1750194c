"""Offline profiler: latency, throughput and energy of one variant per batch size.

What a profile is
-----------------
One replica of a variant runs batches of one size back to back (steady, saturated load, no
queueing, no Ray), in the process that calls :func:`profile_variant`. As in ML.ENERGY's
steady-state methodology, the first ``warmup_s`` of batches are discarded (lazy
initialisation, allocator and cache warm-up), then a window of at least ``window_s`` seconds
*and* at least ``min_batches`` batches is measured, then load continues for ``drain_s``
outside the window. The window starts and ends on batch boundaries, so it holds whole batches
only: requests in the window = batches × batch size, and the last in-flight batch (the drain)
never counts. The drain keeps the node loaded right up to (and past) the closing sample, so
the window's edge sees the same steady state as its middle.

* latency: the wall time of each batch (ms, ``time.perf_counter``) → p50 and p99 of batch
  latency (``numpy.percentile``, linear interpolation).
* throughput: requests in the window / window length (s), per replica.
* energy: every meter is sampled at the window's start and end, and at most every
  ``sample_interval_s`` in between *between batches* (never during one): counters that wrap
  (RAPL) or meters that integrate instantaneous power (NVML without an energy counter, the TDP
  estimate) get a reading often enough; a window is ``Measurement.between(start, end)`` per
  meter since samples are cumulative.

  Counted devices: ``cpu:*`` and ``dram:*`` for a CPU device; the same plus ``gpu:N`` when
  profiling on ``cuda:N`` (host-side pre/post-processing is part of the cost of a GPU
  request too).

  Node idle power per counted device (W), in this order:

  1. the meter's own ``idle_power_w()`` where it has one (the TDP estimate: its assumed idle,
     see energy/meters/tdp.py);
  2. otherwise measured: the meters are sampled, the profiler sleeps ``idle_s`` (1 s), and
     samples again — mean power with the model loaded and nothing running, once per
     :func:`profile_variant` call, before the first batch. This "idle" includes whatever
     else the node is doing at that moment.

  **Dynamic energy per request** = (window energy − node idle power × window duration) /
  requests in the window, summed over the counted devices (each meter's own window duration),
  clamped at 0 (noise can push a tiny variant's dynamic energy below the idle baseline).
  Node-wide counters see every process on the node: profile on a quiet node.

  **Idle power of the allocation** (``Profile.idle_power_w``) = node idle power × the
  replica's share: ``num_cpus / os.cpu_count()`` of the CPU/DRAM idle, plus
  ``min(num_gpus, 1)`` of the profiled GPU's idle. This is what a placed replica costs even
  when it serves nothing, and what the planner charges per replica.

  ``energy_method``: the method of the meters that contribute counted devices. If any of them
  is ``tdp-estimate`` the profile says ``tdp-estimate`` (a number that is partly estimated is
  never labelled as measured). Otherwise the GPU meter's method when profiling on ``cuda:N``,
  else the CPU meter's: one method per profile, never a joined label.

The request payloads: :func:`workloads.payloads.payload_for`. Fitted latency, storage and
hardware ids: :mod:`workloads.profile_store`. The window and its energy arithmetic:
:mod:`workloads.steady_state`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np

from energy.meters.base import Meter
from ipa_energy.energy import EnergyMethod
from ipa_energy.spec import Profile, VariantSpec
from workloads.cold_start import ColdStart, measure_cold_start
from workloads.payloads import Runner, payload_for
from workloads.profile_store import ProfileStore, hardware_id, parse_device
from workloads.steady_state import (
    Window, allocation_idle_power, dynamic_energy_j, energy_method, node_idle_power, steady_window,
)
from workloads.tasks import build_runner

__all__ = ["ProgressEvent", "ProgressStatus", "profile_missing", "profile_variant"]

logger = logging.getLogger(__name__)

ProgressStatus = Literal["exists", "too-large", "measured"]


# --------------------------------------------------------------------------------------------
# The steps of profile_variant
# --------------------------------------------------------------------------------------------


def _resolve_device(variant: VariantSpec, device: str | None) -> tuple[str, int | None]:
    """(device, GPU index or None): ``cuda:0`` for variants with GPUs, else ``cpu``, unless given."""
    if device is None:
        device = "cuda:0" if variant.resources.num_gpus > 0 else "cpu"
    kind, index = parse_device(device)
    if (kind == "cuda") != (variant.resources.num_gpus > 0):
        raise ValueError(f"device {device!r} does not match {variant.name!r}'s resources "
                         f"(num_gpus={variant.resources.num_gpus})")
    return device, (index if kind == "cuda" else None)


def _batch_sizes(variant: VariantSpec, batch_sizes: Iterable[int]) -> list[int]:
    """Distinct batch sizes in order; ValueError below 1; above max_batch_size skipped (warning)."""
    sizes = []
    for b in dict.fromkeys(int(b) for b in batch_sizes):
        if b < 1:
            raise ValueError(f"batch sizes must be ≥ 1, got {b}")
        if b > variant.max_batch_size:
            logger.warning("skipping %s batch %d: above its max_batch_size %d", variant.name, b, variant.max_batch_size)
            continue
        sizes.append(b)
    return sizes


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch runs with `n` intra-op threads inside the block; the previous number is restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _profile_record(variant: VariantSpec, batch_size: int, window: Window, *, dynamic_j: float, hardware: str,
                    idle_power_w: float, method: EnergyMethod, gpu_index: int | None = None,
                    gpu_memory_mb: float | None = None, cold: ColdStart | None = None) -> Profile:
    """The Profile of one window: latency percentiles, throughput, dynamic energy and demand per request."""
    requests = len(window.latencies_s) * batch_size
    lat_ms = np.asarray(window.latencies_s) * 1000.0
    return Profile(
        variant=variant.name,
        batch_size=batch_size,
        hardware=hardware,
        resources=variant.resources,
        latency_p50_ms=float(np.percentile(lat_ms, 50)),
        latency_p99_ms=float(np.percentile(lat_ms, 99)),
        throughput_rps=requests / window.duration_s,
        energy_per_request_j=max(dynamic_j / requests, 0.0),
        idle_power_w=idle_power_w,
        energy_method=method,
        window_s=window.duration_s,
        weights=variant.weights,
        measured_at=datetime.now(timezone.utc),
        cpu_s_per_request=window.cpu_s / requests,
        # batches run synchronised back to back: the GPU is busy for their wall time
        gpu_busy_s_per_request=sum(window.latencies_s) / requests if gpu_index is not None else None,
        gpu_memory_mb=gpu_memory_mb,
        memory_mb_per_replica=cold.memory_mb_per_replica if cold is not None else None,
        cold_start_s=cold.seconds if cold is not None else None,
        demand="measured",
    )


def profile_variant(
    variant: VariantSpec,
    batch_sizes: Iterable[int],
    *,
    meters: Sequence[Meter],
    warmup_s: float = 2.0,
    window_s: float = 5.0,
    drain_s: float = 0.5,
    hardware: str | None = None,
    num_threads: int | None = None,
    device: str | None = None,
    min_batches: int = 5,
    idle_s: float = 1.0,
    sample_interval_s: float = 0.1,
    payload_kw: dict[str, Any] | None = None,
    runner: Runner | None = None,
    on_profile: Callable[[Profile], None] | None = None,
    cold_start: bool = True,
) -> list[Profile]:
    """Profile `variant` at each batch size (see the module docstring for the method).

    The runner is built once (``build_runner``) and reused for every batch size; torch runs
    with ``max(1, int(num_cpus))`` intra-op threads unless `num_threads` is given (restored
    afterwards). `device` defaults to ``cuda:0`` for variants with GPUs, else ``cpu``; it
    selects the hardware id and the counted energy devices — where the model runs is the
    runner's business. Batch sizes above ``max_batch_size`` are skipped with a warning.
    `on_profile` is called with each profile as soon as it is measured. With `cold_start`
    (and no injected `runner`), a fresh process measures the replica's cold start and the memory
    it adds first (:mod:`workloads.cold_start`).
    """
    import torch

    if not meters:
        raise ValueError("profile_variant needs at least one meter")
    device, gpu_index = _resolve_device(variant, device)
    hardware = hardware or hardware_id(device)
    method = energy_method(meters, gpu_index)
    sizes = _batch_sizes(variant, batch_sizes)
    if not sizes:
        return []

    sync = (lambda: torch.cuda.synchronize(gpu_index)) if gpu_index is not None else (lambda: None)
    cold = measure_cold_start(variant) if cold_start and runner is None else None
    with _torch_threads(int(num_threads) if num_threads else max(1, int(variant.resources.num_cpus))):
        run = runner if runner is not None else build_runner(variant)
        idle, _ = node_idle_power(meters, idle_s)
        alloc_idle = allocation_idle_power(variant, idle, gpu_index)
        out = []
        for b in sizes:
            batch = [payload_for(variant, seed=i, **(payload_kw or {})) for i in range(b)]
            if gpu_index is not None:
                torch.cuda.reset_peak_memory_stats(gpu_index)
            with torch.inference_mode():
                window = steady_window(run, batch, meters, sync, warmup_s=warmup_s, window_s=window_s,
                                       drain_s=drain_s, min_batches=min_batches, sample_interval_s=sample_interval_s)
            gpu_mb = torch.cuda.max_memory_allocated(gpu_index) / 2**20 if gpu_index is not None else None
            profile = _profile_record(variant, b, window, dynamic_j=dynamic_energy_j(window, idle, gpu_index),
                                      hardware=hardware, idle_power_w=alloc_idle, method=method, gpu_index=gpu_index,
                                      gpu_memory_mb=gpu_mb, cold=cold)
            out.append(profile)
            if on_profile is not None:
                on_profile(profile)
        return out


@dataclass(frozen=True)
class ProgressEvent:
    """One step of :func:`profile_missing`: `done` of `total` (variant, batch) pairs handled."""

    variant: str
    batch_size: int
    status: ProgressStatus  # exists: skipped, already stored; too-large: skipped; measured
    done: int
    total: int
    profile: Profile | None = None


def profile_missing(
    variants: Iterable[VariantSpec],
    batch_sizes: Iterable[int],
    store: ProfileStore,
    force: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
    **kw: Any,
) -> list[Profile]:
    """Profile every (variant, batch size) that `store` lacks (all of them with `force`).

    `kw` goes to :func:`profile_variant` (``meters=`` is required). Each profile is written
    to the store as soon as it is measured, so an interrupted run resumes where it stopped.
    Returns the newly measured profiles.
    """
    variants = list(variants)
    sizes = list(dict.fromkeys(int(b) for b in batch_sizes))
    hardware = kw.pop("hardware", None) or (hardware_id(kw["device"]) if kw.get("device") else store.hardware)
    total = len(variants) * len(sizes)
    done = 0
    measured: list[Profile] = []

    def report(name: str, b: int, status: ProgressStatus, profile: Profile | None = None) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(ProgressEvent(name, b, status, done, total, profile))

    for v in variants:
        todo = []
        for b in sizes:
            if b > v.max_batch_size:
                report(v.name, b, "too-large")
            elif not force and store.has(v, b, hardware):
                report(v.name, b, "exists")
            else:
                todo.append(b)
        if not todo:
            continue

        def on_profile(p: Profile, _name: str = v.name) -> None:
            store.put([p])
            measured.append(p)
            report(_name, p.batch_size, "measured", p)

        profile_variant(v, todo, hardware=hardware, on_profile=on_profile, **kw)
    return measured

