"""On a GPU machine: does our zeus-nvml figure agree with nvidia-smi power × time?

Runs ResNet50 (random weights, batch 32, fp16) on GPU 0 under steady load for --seconds,
and over the same window measures the energy three ways:
  1. ZeusMonitor (Zeus's own window API),
  2. energy.meters.zeus.ZeusGpuMeter (the counters our node actor samples),
  3. nvidia-smi's power.draw sampled every 100 ms, integrated over time (trapezoid),
plus the TDP estimate (TDP × utilisation) for the same window, to show how far the
estimate used on machines without counters is from a measurement. Exit code 1 when the
Zeus figures and nvidia-smi differ by more than --tolerance.

    python bench/gpu_energy_check.py --seconds 30      # prints a table; JSON with --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time


def nvidia_smi_power(stop: threading.Event, out: list[tuple[float, float]], index: int) -> None:
    cmd = ["nvidia-smi", f"--id={index}", "--query-gpu=power.draw,utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if stop.is_set():
                proc.terminate()
                break
            try:
                watts, util = (float(x) for x in line.split(","))
            except ValueError:
                continue
            out.append((time.time(), watts, util))


def integrate(samples: list[tuple[float, float, float]], t0: float, t1: float) -> float:
    pts = [(t, w) for t, w, _ in samples if t0 <= t <= t1]
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    import torchvision
    from zeus.monitor import ZeusMonitor

    from energy.meters.base import Measurement
    from energy.meters.tdp import DEFAULT_IDLE_FRACTION
    from energy.meters.tdp_tables import gpu_tdp_w
    from energy.meters.zeus import ZeusGpuMeter

    device = torch.device(f"cuda:{args.gpu}")
    model = torchvision.models.resnet50(weights=None).to(device).half().eval()
    batch = torch.rand(32, 3, 224, 224, device=device, dtype=torch.half)
    with torch.inference_mode():
        for _ in range(10):  # warm-up: not in the window
            model(batch)
    torch.cuda.synchronize(device)

    meter = ZeusGpuMeter()
    monitor = ZeusMonitor(gpu_indices=[args.gpu], approx_instant_energy=True)
    smi: list[tuple[float, float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=nvidia_smi_power, args=(stop, smi, args.gpu), daemon=True)
    sampler.start()
    time.sleep(1.0)

    start_sample = meter.sample()
    monitor.begin_window("check")
    t0, batches = time.time(), 0
    with torch.inference_mode():
        while time.time() - t0 < args.seconds:
            model(batch)
            batches += 1
            if batches % 10 == 0:
                torch.cuda.synchronize(device)
    torch.cuda.synchronize(device)
    zeus = monitor.end_window("check")
    end_sample = meter.sample()
    t1 = time.time()
    time.sleep(0.5)
    stop.set()

    ours = Measurement.between(start_sample, end_sample)
    smi_j = integrate(smi, t0, t1)
    util = [u for t, _, u in smi if t0 <= t <= t1]
    name = meter.names()[f"gpu:{args.gpu}"]
    tdp = gpu_tdp_w(name)
    mean_util = sum(util) / len(util) / 100 if util else 0.0
    idle = DEFAULT_IDLE_FRACTION * tdp if tdp else None
    tdp_j = (idle + (tdp - idle) * mean_util) * (t1 - t0) if tdp else None
    result = {
        "gpu": name,
        "window_s": t1 - t0,
        "images_per_s": batches * 32 / (t1 - t0),
        "zeus_monitor_j": zeus.gpu_energy[args.gpu],
        "zeus_meter_j": ours.energy_j[f"gpu:{args.gpu}"],
        "nvidia_smi_j": smi_j,
        "nvidia_smi_samples": len(util),
        "tdp_estimate_j": tdp_j,
        "tdp_w": tdp,
        "mean_utilisation": mean_util,
    }
    result["zeus_vs_smi"] = result["zeus_monitor_j"] / smi_j - 1 if smi_j else None
    result["meter_vs_smi"] = result["zeus_meter_j"] / smi_j - 1 if smi_j else None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v:.4f}" if isinstance(v, float) else f"{k:>20}: {v}")
    ok = smi_j > 0 and all(abs(result[k]) <= args.tolerance for k in ("zeus_vs_smi", "meter_vs_smi"))
    print("OK: within tolerance" if ok else f"FAIL: differ by more than {args.tolerance:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
