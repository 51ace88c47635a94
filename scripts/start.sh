#!/usr/bin/env bash
# Set up (first time) and start the dashboard on http://127.0.0.1:7860 with the embedded default models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
