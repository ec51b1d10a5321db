#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, lint, types, then the whole suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
lab/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# a private basetemp: pytest prunes old /tmp/pytest-of-root/pytest-N dirs, even those of a running session
exec .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp=/tmp/kolabmon-pytest "$@"
