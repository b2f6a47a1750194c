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
     see energy/tdp.py);
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
  never labelled as measured). Otherwise the CPU meter's method for CPU devices, the GPU
  meter's method for GPU devices.

Fitted latency, storage and hardware ids: :mod:`workloads.profile_store`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from energy.base import Measurement, Meter, Sample
from ipa_energy.errors import SpecError
from ipa_energy.spec import Profile, VariantSpec
from workloads import payloads
from workloads.profile_store import ProfileStore, parse_device, hardware_id
from workloads.tasks import build_runner

logger = logging.getLogger(__name__)

DEFAULT_FRAME_PX = 320  # video frames / detector input when the variant names no input size
ProgressStatus = Literal["exists", "too-large", "measured"]


# --------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------


def _image_size(variant: VariantSpec) -> int:
    # classify-crops: input_size is the crop size, not the frame's.
    if variant.task == "classify-crops":
        return DEFAULT_FRAME_PX
    args = variant.build_args  # torchvision classifiers: input_size; SAM: img_size
    return int(args.get("input_size", args.get("img_size", DEFAULT_FRAME_PX)))


def _detections(rng: np.random.Generator, size: int, n: int) -> list[dict]:
    dets = []
    for _ in range(n):
        w, h = rng.integers(size // 8, size // 2, 2)
        x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
        dets.append({"box": [float(x1), float(y1), float(x1 + w), float(y1 + h)], "class_id": 0,
                     "label": "object", "score": 1.0})
    return dets


def payload_for(variant: VariantSpec, seed: int = 0, *, image_size: int | None = None,
                prompt_words: int = 32, max_new_tokens: int = 16, num_detections: int = 4) -> dict:
    """A realistic request payload for `variant`'s task (deterministic in `seed`).

    Images are ``synthetic_image`` uint8 HxWx3 arrays at the variant's input resolution
    (``build_args["input_size"]``, SAM's ``img_size``), else 320 px; classify-crops gets a
    320 px frame (its input_size is the crop size). Tasks that read detections get
    `num_detections` boxes inside the image; "segment" gets one foreground point.
    Generation: a prompt of `prompt_words` words and `max_new_tokens`.
    """
    task = variant.task
    size = int(image_size) if image_size else _image_size(variant)
    rng = np.random.default_rng(seed)
    if task in ("classify", "detect"):
        return {"image": payloads.synthetic_image(size, size, seed)}
    if task in ("classify-crops", "segment-detections"):
        return {"image": payloads.synthetic_image(size, size, seed), "detections": _detections(rng, size, num_detections)}
    if task == "segment":
        x, y = (float(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        return {"image": payloads.synthetic_image(size, size, seed), "prompts": {"points": [[x, y, 1]], "boxes": []}}
    if task == "generate":
        return {"prompt": payloads.prompt(prompt_words, seed), "max_new_tokens": int(max_new_tokens)}
    raise SpecError(f"no profiling payload for task {task!r} of variant {variant.name!r}; "
                    "known: classify, detect, classify-crops, generate, segment, segment-detections")


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _counted(device_id: str, gpu_index: int | None) -> bool:
    if device_id.startswith(("cpu:", "dram:")):
        return True
    return gpu_index is not None and device_id == f"gpu:{gpu_index}"


def _sample_all(meters: Sequence[Meter]) -> list[Sample]:
    return [m.sample() for m in meters]


def node_idle_power(meters: Sequence[Meter], idle_s: float = 1.0) -> tuple[dict[str, float], dict[str, str]]:
    """Node idle power per device (W) and where each figure came from ('meter' | 'measured').

    A meter with ``idle_power_w()`` (the TDP estimate) gives its own; for the others the
    meters are sampled, we sleep `idle_s`, and sample again (mean power while idle).
    """
    idle: dict[str, float] = {}
    source: dict[str, str] = {}
    to_measure = []
    for m in meters:
        own = getattr(m, "idle_power_w", None)
        if callable(own):
            for d, w in own().items():
                idle[d], source[d] = float(w), "meter"
        else:
            to_measure.append(m)
    if to_measure:
        first = _sample_all(to_measure)
        time.sleep(idle_s)
        for a, b in zip(first, _sample_all(to_measure)):
            w = Measurement.between(a, b)
            for d, j in w.energy_j.items():
                if d not in idle:
                    idle[d], source[d] = max(j, 0.0) / w.duration_s if w.duration_s > 0 else 0.0, "measured"
    return idle, source


def _energy_method(meters: Sequence[Meter], gpu_index: int | None) -> str:
    contributing = [m for m in meters if any(_counted(d, gpu_index) for d in m.devices())]
    if not contributing:
        raise ValueError("no meter covers the profiled devices (cpu:*, dram:*, gpu:N)")
    if any(m.method == "tdp-estimate" for m in contributing):
        return "tdp-estimate"
    if gpu_index is not None:
        gpu = [m for m in contributing if f"gpu:{gpu_index}" in m.devices()]
        if gpu:
            return gpu[0].method
    cpu = [m for m in contributing if any(d.startswith("cpu:") for d in m.devices())]
    return (cpu or contributing)[0].method


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
    runner: Callable[[list[dict]], list[dict]] | None = None,
    on_profile: Callable[[Profile], None] | None = None,
) -> list[Profile]:
    """Profile `variant` at each batch size (see the module docstring for the method).

    The runner is built once (``build_runner``) and reused for every batch size; torch runs
    with ``max(1, int(num_cpus))`` intra-op threads unless `num_threads` is given (restored
    afterwards). `device` defaults to ``cuda:0`` for variants with GPUs, else ``cpu``; it
    selects the hardware id and the counted energy devices — where the model runs is the
    runner's business. Batch sizes above ``max_batch_size`` are skipped with a warning.
    `on_profile` is called with each profile as soon as it is measured.
    """
    import torch

    if not meters:
        raise ValueError("profile_variant needs at least one meter")
    if device is None:
        device = "cuda:0" if variant.resources.num_gpus > 0 else "cpu"
    kind, index = parse_device(device)
    if (kind == "cuda") != (variant.resources.num_gpus > 0):
        raise ValueError(f"device {device!r} does not match {variant.name!r}'s resources "
                         f"(num_gpus={variant.resources.num_gpus})")
    gpu_index = index if kind == "cuda" else None
    hardware = hardware or hardware_id(device)
    method = _energy_method(meters, gpu_index)

    sizes = []
    for b in dict.fromkeys(int(b) for b in batch_sizes):
        if b < 1:
            raise ValueError(f"batch sizes must be ≥ 1, got {b}")
        if b > variant.max_batch_size:
            logger.warning("skipping %s batch %d: above its max_batch_size %d", variant.name, b, variant.max_batch_size)
            continue
        sizes.append(b)
    if not sizes:
        return []

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(num_threads) if num_threads else max(1, int(variant.resources.num_cpus)))
    sync = (lambda: torch.cuda.synchronize(index)) if kind == "cuda" else (lambda: None)
    try:
        run = runner if runner is not None else build_runner(variant)
        idle, _ = node_idle_power(meters, idle_s)
        share_cpu = variant.resources.num_cpus / (os.cpu_count() or 1)
        share_gpu = min(variant.resources.num_gpus, 1.0)
        alloc_idle = sum(w * (share_gpu if d.startswith("gpu:") else share_cpu)
                         for d, w in idle.items() if _counted(d, gpu_index))
        out = []
        for b in sizes:
            batch = [payload_for(variant, seed=i, **(payload_kw or {})) for i in range(b)]
            with torch.inference_mode():
                lat, start, end, elapsed = _steady_window(run, batch, meters, sync, warmup_s, window_s,
                                                          drain_s, min_batches, sample_interval_s)
            requests = len(lat) * b
            dynamic = 0.0
            for s0, s1 in zip(start, end):
                w = Measurement.between(s0, s1)
                dynamic += sum(j - idle.get(d, 0.0) * w.duration_s for d, j in w.energy_j.items() if _counted(d, gpu_index))
            lat_ms = np.asarray(lat) * 1000.0
            profile = Profile(
                variant=variant.name,
                batch_size=b,
                hardware=hardware,
                resources=variant.resources,
                latency_p50_ms=float(np.percentile(lat_ms, 50)),
                latency_p99_ms=float(np.percentile(lat_ms, 99)),
                throughput_rps=requests / elapsed,
                energy_per_request_j=max(dynamic / requests, 0.0),
                idle_power_w=alloc_idle,
                energy_method=method,
                window_s=elapsed,
                weights=variant.weights,
                measured_at=datetime.now(timezone.utc),
            )
            out.append(profile)
            if on_profile is not None:
                on_profile(profile)
        return out
    finally:
        torch.set_num_threads(previous_threads)


def _steady_window(run, batch, meters, sync, warmup_s, window_s, drain_s, min_batches, sample_interval_s):
    """Warm-up, then a window of whole batches (≥ window_s and ≥ min_batches), then drain."""
    clock = time.perf_counter
    t0 = clock()
    while True:  # warm-up: at least one batch, then until warmup_s has passed
        run(batch)
        sync()
        if clock() - t0 >= warmup_s:
            break
    start = _sample_all(meters)
    window_start = last_sample = clock()
    latencies = []
    while True:
        s = clock()
        run(batch)
        sync()
        e = clock()
        latencies.append(e - s)
        if e - window_start >= window_s and len(latencies) >= min_batches:
            break
        if e - last_sample >= sample_interval_s:  # between batches only; counters stay cumulative
            _sample_all(meters)
            last_sample = clock()
    end = _sample_all(meters)
    window_end = clock()
    while clock() - window_end < drain_s:  # drain: load continues, outside the window
        run(batch)
        sync()
    return latencies, start, end, window_end - window_start


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


