#!/usr/bin/env bash
# The main job (README): set-up, then the lab demo.
set -euo pipefail
cd "$(dirname "$0")/.."
lab/setup.sh
exec .venv/bin/python lab/demo.py "$@"
