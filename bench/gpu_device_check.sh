#!/usr/bin/env bash
# The GPU checks of `make gpu-energy-check` and `make gpu-profile`, in one run, on a machine with
# an NVIDIA GPU but no registry and no .venv (the device machine: python3 3.12 with torch,
# torchvision, transformers, numpy, scipy, nvidia-ml-py ...; no pydantic, zeus, segment-anything,
# ray, pulp). The missing packages travel as wheels in .whl (pins: bench/gpu_wheels.txt) and are
# installed into /tmp/site; nothing on these paths imports ray, pulp or locust.
#
#   1. bench/gpu_energy_check.py --seconds 30 --json: Zeus/NVML vs nvidia-smi power x time.
#   2. ipa-energy profile (python3 -m cli.main profile) --tier full --device cuda:0, variants in
#      priority order (classify, video, sam, sam-grounded, llm small to large), capped so the
#      whole script ends within TOTAL_S; the store writes each profile as it is measured, so a
#      cut run keeps what it measured, and a rerun with that file in workloads/profiles/ resumes.
#   3. a summary of what was measured.
#
# Exit 0 when the energy check passed and the profile finished or was cut on time, else 1.
# Everything goes to $OUT/log.txt; $OUT also gets gpu_energy_check.txt (its output) and .json,
# the profile store file written in this run (gpu-nvidia-h200.json) and profile_summary.txt.
#
# Through the device tool, from the repo root (wheels built here first, see below):
#   run(command="bash bench/gpu_device_check.sh", carry=[".whl"], timeout_s=450)
# About 400 s: wheels ~5 s, diagnostics ~10 s, step 1 ~50 s, step 2 the rest (cut at TOTAL_S-20 s).
# Knobs (environment): TOTAL_S (400), ENERGY_SECONDS (30), ENERGY_TIMEOUT_S (120), PROFILE_TIER
# (full), PROFILE_DEVICE (cuda:0), PROFILE_VARIANTS (below), PROFILE_BATCHES (1,4,16),
# PROFILE_WARMUP (1), PROFILE_WINDOW (2), PROFILE_OUT (workloads/profiles), GPU_PYTHON (python3),
# WHL_DIR (.whl), SITE (/tmp/site). E.g. "TOTAL_S=300 PROFILE_VARIANTS=qwen2.5-0.5b bash bench/...".
#
# Build .whl here first (about 3 MB, git-ignored): `make gpu-wheels` (pins: bench/gpu_wheels.txt).
# Expect the first ~16 variants (classify and video pipelines) in the default 400 s: each variant
# costs a cold-start probe (a fresh python3 builds it and answers once) plus warm-up + window +
# drain per batch size. To resume, copy the returned gpu-nvidia-h200.json into workloads/profiles/
# (it travels with the tree) and run again: stored (variant, batch) pairs are skipped.
# Without readable RAPL (a VM) the CPU share of each profile is the TDP estimate, so the profiles
# say energy_method "tdp-estimate" (their GPU part is NVML's); step 1 is GPU-only, measured.
# On a normal GPU machine with the venv, `make gpu-energy-check gpu-profile` are the same checks.

set -u
set -o pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-results/gpu-device-check}
TOTAL_S=${TOTAL_S:-400}
ENERGY_SECONDS=${ENERGY_SECONDS:-30}
ENERGY_TIMEOUT_S=${ENERGY_TIMEOUT_S:-120}
PROFILE_TIER=${PROFILE_TIER:-full}
PROFILE_DEVICE=${PROFILE_DEVICE:-cuda:0}
PROFILE_BATCHES=${PROFILE_BATCHES:-1,4,16}
PROFILE_WARMUP=${PROFILE_WARMUP:-1}
PROFILE_WINDOW=${PROFILE_WINDOW:-2}
PROFILE_OUT=${PROFILE_OUT:-workloads/profiles}
# Whole pipelines first, cheapest first within each; qwen2.5-3b and -7b last: each is built twice
# (cold-start probe, then the profiler) with random weights on one CPU thread, minutes for the 7B.
PROFILE_VARIANTS=${PROFILE_VARIANTS:-resnet18-224,resnet34-224,resnet50-224,resnet101-224,resnet152-224,\
ssdlite320-mobilenet-v3-large,fasterrcnn-mobilenet-v3-large-320-fpn,fasterrcnn-mobilenet-v3-large-fpn,\
fcos-resnet50-fpn,retinanet-resnet50-fpn,fasterrcnn-resnet50-fpn-v2,resnet18,resnet34,resnet50,resnet101,resnet152,\
sam-vit-b,sam-vit-l,sam-vit-h,sam-vit-b-grounded,sam-vit-l-grounded,sam-vit-h-grounded,\
qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-3b,qwen2.5-7b}
PY=${GPU_PYTHON:-python3}
WHL_DIR=${WHL_DIR:-.whl}
SITE=${SITE:-/tmp/site}
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

mkdir -p "$OUT"
LOG="$OUT/log.txt"
T0=$(date +%s)
STAMP=$(mktemp /tmp/gpu-device-check.XXXXXX)  # store files newer than this were written by this run
elapsed() { echo $(($(date +%s) - T0)); }
log() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }

# --- wheels ------------------------------------------------------------------------------------
if compgen -G "$WHL_DIR/*.whl" >/dev/null; then
    log "installing $(ls "$WHL_DIR"/*.whl | wc -l) wheels from $WHL_DIR into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHL_DIR"/*.whl 2>&1 | grep -v "Running pip as the 'root' user" | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { log "FAIL: wheel install"; exit 1; }
    rm -rf "$SITE/tests" "$SITE/docs" "$SITE/examples"  # zeus's wheel ships these as top-level folders
else
    log "no wheels in $WHL_DIR: using whatever $PY has (carry [\".whl\"] on the device machine)"
fi
# The repo first (its packages, and `python -m workloads.cold_start` in the profiler's probe), then the wheels.
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"

# --- diagnostics -------------------------------------------------------------------------------
log "machine"
{ uname -srm; echo "cpus: $(nproc)"; free -g | head -2
  nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit,memory.total,clocks.sm --format=csv
  echo "powercap: $(ls /sys/class/powercap 2>&1 | tr '\n' ' ')"; } 2>&1 | tee -a "$LOG"
timeout -k 5 60 "$PY" - "$PROFILE_DEVICE" <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.metadata as md
import sys

print(sys.executable, sys.version.split()[0])
for d in ("torch", "torchvision", "transformers", "numpy", "typing_extensions", "pydantic", "pydantic_core",
          "zeus", "segment_anything", "nvidia-ml-py", "scikit-learn", "rich"):
    try:
        print(f"  {d} {md.version(d)}")
    except md.PackageNotFoundError:
        print(f"  {d} MISSING")
import torch

print("cuda:", torch.cuda.is_available(), torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
from energy.config import EnergyConfig
from energy.meters.select import select_meters
from workloads.profile_store import hardware_id

print("meters:", [(type(m).__name__, m.method, m.devices()) for m in select_meters(EnergyConfig())])
print("hardware id:", hardware_id(sys.argv[1]))
print("not imported (must be empty):", [m for m in ("ray", "pulp", "locust", "amdsmi") if m in sys.modules])
EOF

# --- step 1 ------------------------------------------------------------------------------------
log "step 1: bench/gpu_energy_check.py --seconds $ENERGY_SECONDS --json (timeout ${ENERGY_TIMEOUT_S}s)"
timeout -k 10 "$ENERGY_TIMEOUT_S" "$PY" bench/gpu_energy_check.py --seconds "$ENERGY_SECONDS" --json 2>&1 \
    | tee "$OUT/gpu_energy_check.txt" | tee -a "$LOG"
rc1=$?
sed -n '/^{$/,/^}$/p' "$OUT/gpu_energy_check.txt" > "$OUT/gpu_energy_check.json"
[ -s "$OUT/gpu_energy_check.json" ] || rm -f "$OUT/gpu_energy_check.json"
log "step 1 exit $rc1 (0: within tolerance, 1: outside it or failed, 124: timed out)"

# --- step 2 ------------------------------------------------------------------------------------
cap=$((TOTAL_S - $(elapsed) - 20))
[ "$cap" -ge 30 ] || cap=30
log "step 2: profile --tier $PROFILE_TIER --device $PROFILE_DEVICE --batch-sizes $PROFILE_BATCHES" \
    "--warmup $PROFILE_WARMUP --window $PROFILE_WINDOW --out $PROFILE_OUT (cut after ${cap}s)"
log "variants, in order: $PROFILE_VARIANTS"
watch_store() {  # the CLI's progress bar shows nothing without a terminal: count what lands instead
    while sleep 20; do
        for f in "$PROFILE_OUT"/*.json; do
            [ "$f" -nt "$STAMP" ] && log "  $(basename "$f"): $(grep -c '"batch_size"' "$f") profiles"
        done
    done
}
watch_store &
watcher=$!
timeout -k 10 "$cap" "$PY" -m cli.main profile --tier "$PROFILE_TIER" --device "$PROFILE_DEVICE" \
    --variants "$PROFILE_VARIANTS" --batch-sizes "$PROFILE_BATCHES" --warmup "$PROFILE_WARMUP" \
    --window "$PROFILE_WINDOW" --out "$PROFILE_OUT" 2>&1 | tee -a "$LOG"
rc2=$?
kill "$watcher" 2>/dev/null
log "step 2 exit $rc2 (0: all done, 124: cut at ${cap}s, what was measured is kept)"

# --- summary -----------------------------------------------------------------------------------
stores=()
for f in "$PROFILE_OUT"/*.json; do
    [ "$f" -nt "$STAMP" ] && cp "$f" "$OUT/" && stores+=("$OUT/$(basename "$f")")
done
rm -f "$STAMP"
if [ "${#stores[@]}" -gt 0 ]; then
    # the profiler's own table (workloads.profile_store.format_table), and what it did not reach
    timeout -k 5 60 "$PY" - "$PROFILE_VARIANTS" "${stores[@]}" <<'EOF' 2>&1 | tee "$OUT/profile_summary.txt" | tee -a "$LOG"
import sys
from pathlib import Path

from rich.console import Console

from workloads.profile_store import ProfileStore, format_table

for path in map(Path, sys.argv[2:]):
    profiles = ProfileStore(path.parent).load(path.stem)
    Console(width=160).print(format_table(profiles, title=f"{path}: {len(profiles)} profiles"))
    done = {p.variant for p in profiles}
    print("not measured:", [v for v in sys.argv[1].split(",") if v not in done] or "none")
EOF
else
    log "no profile store file was written in this run"
fi
log "done: step 1 exit $rc1, step 2 exit $rc2; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
# 0: the energy check passed and the profile ran to the end or was cut on time (planned); else 1.
[ "$rc1" -eq 0 ] && { [ "$rc2" -eq 0 ] || [ "$rc2" -eq 124 ]; }
