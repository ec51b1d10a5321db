#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, lint, types, then the whole suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
lab/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
