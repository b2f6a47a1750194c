"""A replica's cold start, measured the way it happens: a fresh process imports torch, builds
and loads the model and warms it up until its first answer.

`measure_cold_start(variant)` runs ``python -m workloads.cold_start`` with the VariantSpec JSON
on stdin and times it from the outside, so the figure includes the interpreter and the
imports a new Serve replica pays too (not Ray's own worker start, which comes on top). The
child reports, once warm, the memory only it holds (its unique set size): what one more
replica of the variant adds to a node (shared libraries are mapped once per node).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ipa_energy.spec import VariantSpec

__all__ = ["ColdStart", "measure_cold_start"]

#: longest a cold start may take before the probe gives up (s): a full-size model on a CPU
TIMEOUT_S = 900.0


class ColdStart(tuple):
    """(seconds until the first answer, MiB one more replica adds once warm: its USS)."""

    @property
    def seconds(self) -> float:
        return self[0]

    @property
    def memory_mb_per_replica(self) -> float:
        return self[1]


def measure_cold_start(variant: VariantSpec, timeout_s: float = TIMEOUT_S) -> ColdStart:
    """Start a fresh process that serves `variant`'s first request; raises RuntimeError if it fails."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "workloads.cold_start"], input=variant.model_dump_json(),
                          capture_output=True, text=True, timeout=timeout_s)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of {variant.name} failed: {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return ColdStart((seconds, float(report["memory_mb_per_replica"])))


def _serve_first_request() -> None:
    import psutil
    import torch

    from workloads.payloads import warmup_payload
    from workloads.tasks import build_runner

    variant = VariantSpec.model_validate_json(sys.stdin.read())
    torch.set_num_threads(max(1, int(variant.resources.num_cpus)))  # as a stage replica does
    run = build_runner(variant)
    with torch.inference_mode():
        run([warmup_payload(variant.task)])
    # USS: the memory only this process holds (libraries torch maps are shared between replicas)
    print(json.dumps({"memory_mb_per_replica": psutil.Process().memory_full_info().uss / 2**20}))


if __name__ == "__main__":
    _serve_first_request()
