# Every target sets up .venv first if needed; nothing is installed outside it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install demo bench bench-traces sweeps test test-unit test-integration bench-overhead bench-energy-overhead kill-battery soak gpu-energy-check gpu-profile gpu-device-check gpu-wheels train-predictor serve clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[test]"
	# amdsmi (a zeus dependency) raises KeyError at import without ROCm, which kills
	# `import ray` in every Ray process; zeus itself works without it.
	$(BIN)/python -m pip uninstall --quiet --yes amdsmi
	$(BIN)/python -c "import ray, zeus, torch, torchvision; print('ok: ray', ray.__version__, 'torch', torch.__version__)"
	touch $(STAMP)

demo: install
	$(BIN)/ipa-energy demo

# Every policy (ipa, ipa-energy, fa2-low, fa2-high, rim, static-max-accuracy, static-min-energy,
# serve-autoscaling) on the classify pipeline, the rising edge of IPA's bursty window, 3 times each,
# interleaved (the report: mean and min–max); ~60 min on the 2-core host. Complete runs are kept, so a rerun adds only what is missing.
bench: install
	$(BIN)/ipa-energy experiment --pipeline classify --policies all --trace bursty --offset 340 --seconds 120 \
		--rate-factor 0.3 --repeat 3 --name bench-classify-bursty --report

sweeps: install
	$(BIN)/ipa-energy sweep all --out results/sweeps

test: install
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-integration: install
	$(BIN)/python -m pytest -q tests/integration

# ipa and ipa-energy on IPA's four Twitter windows (classify) and llm on a constant and a bursty trace; ~40 min.
bench-traces: install
	$(BIN)/python bench/other_traces.py --out results/traces

bench-overhead: install
	$(BIN)/python bench/overhead.py

bench-energy-overhead: install
	$(BIN)/python bench/energy_overhead.py --seconds 60

# The video app under 4 clients, its detector replica, an ingress replica, the energy and the
# arrivals actor killed 20 s apart, three times over (issue 12; docs/faults.md); ~8 min.
kill-battery: install
	$(BIN)/python bench/kill_battery.py --runs 3

# The demo pipeline at 3 req/s for 30 minutes with the planner: every Ray process's memory at
# the start and the end, growth over 5% flagged (issue 12).
soak: install
	$(BIN)/python bench/soak.py --minutes 30 --rate 3

# Needs an NVIDIA GPU: Zeus/NVML energy vs nvidia-smi power × time (exit 1 if >10% apart).
gpu-energy-check: install
	$(BIN)/python bench/gpu_energy_check.py --seconds 30

# On a GPU machine: profile the full tier on cuda:0 into workloads/profiles/gpu-<name>.json.
gpu-profile: install
	$(BIN)/ipa-energy profile --tier full --device cuda:0 --batch-sizes 1,2,4,8,16 --warmup 2 --window 5

# The two checks above on the device machine (no registry, no .venv: its own python3 + wheels from
# .whl), in one run that ends within TOTAL_S (400 s): the energy check, then the full tier in
# priority order, cut when time is up (what was measured is kept); logs and results in $OUT
# (default results/gpu-device-check). How to call it through the device tool: the script's header.
gpu-device-check:
	bash bench/gpu_device_check.sh

# The wheels gpu-device-check installs there (bench/gpu_wheels.txt), for Python 3.12 on x86-64, into .whl.
gpu-wheels:
	mkdir -p .git/info && (grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude)
	rm -rf .whl
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r bench/gpu_wheels.txt

# Retrain IPA's LSTM load predictor on days 0-14 of the Twitter trace (evaluated on 14-21).
train-predictor: install
	$(BIN)/python -m planner.train_predictor

serve: install
	$(BIN)/serve run serve_app:app

clean:
	rm -rf $(VENV) build *.egg-info
