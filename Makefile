# Two commands do everything on a fresh machine:  make demo   and   make test
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.linguaforge-installed
export DS_ACCELERATOR ?= cpu
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup browser demo test test-fast test-under-load faults reliability-doc bench bench-anchors science sweep-maet lint clean gpu-check gpu-wheels

setup: $(STAMP)

# torch first (the machine's CPU wheel; a plain `torch` requirement would pull a multi-GB CUDA build),
# then DeepSpeed with its CPU shared-memory op prebuilt (saves ~35 s on every first run), then the project.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q einops hjson msgpack ninja py-cpuinfo psutil packaging tqdm "numpy>=1.26" "pydantic>=2.7"
	DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 $(PIP) install -q --no-build-isolation --no-deps deepspeed==0.19.8
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/linguaforge run

# The UI test drives Debian's chromium through Playwright (Playwright's own browser download does not
# work offline); installed with apt when we may, otherwise that one test is skipped, saying why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not installed: the UI test will be skipped"

test: setup browser
	$(PY) -m pytest -q

# The suite beside a CPU hog of 2 busy processes (the machine has 2 cores), started here and stopped by PID
test-under-load: setup browser
	@$(PY) -c 'while True: pass' & h1=$$!; $(PY) -c 'while True: pass' & h2=$$!; \
	  trap "kill $$h1 $$h2" EXIT; echo "CPU hog: PIDs $$h1 $$h2"; \
	  $(PY) -m pytest -q --junitxml=build/reliability/under-load.xml

# Every kill point of the fault suite (make test runs one per case)
faults: setup
	LINGUAFORGE_FAULT_POINTS=5 $(PY) -m pytest -q tests/faults

# docs/reliability.md from the tables the fault, bad-input and load tests wrote into build/reliability/
reliability-doc: setup
	$(PY) bench/reliability_doc.py

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# the science (settings chosen on dev, then every seed on test) is `make science`, not part of `make bench`;
# the side-by-side benches against mergekit and lm-eval are `make bench-anchors`
bench: setup
	@for b in bench/bench_*.py; do case $$b in bench/bench_vs_*) continue;; esac; \
	  echo "== $$b"; $(PY) $$b || exit 1; done

# mergekit and lm-evaluation-harness, each in a venv of its own under bench/.anchors/ (first use), then both
# side-by-side benches on the same inputs
bench-anchors: setup
	$(PY) bench/anchors.py
	$(PY) bench/bench_vs_mergekit.py
	$(PY) bench/bench_vs_lmeval.py

# selection on seed 0's dev split (bench/science.yaml, ~1 h), then per seed on test the dev-chosen demo, MAET at the
# paper's settings and the ablation ladder (~30 min a seed on 2 cores); `--phase select|test` runs one half
science: setup
	$(PY) bench/science.py --seeds 0 1 2 3 4

# an exploration that scores the TEST files (docs/demo-world.md's sweep): for choosing settings, `make science`
sweep-maet: setup
	$(PY) bench/sweep_maet.py

# On a lent GPU machine (its own torch and transformers, no package index): one short prepared run that prints one
# table (bench/gpu_check.py). `make gpu-wheels` here first puts the few wheels it lacks in build/gpu-wheels.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py

gpu-wheels: setup
	$(PY) bench/gpu_wheels.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf .linguaforge
