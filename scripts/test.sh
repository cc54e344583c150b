#!/usr/bin/env bash
# Sets everything up from nothing (scripts/setup.sh) and runs the lint and the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k sync`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
set +u
# shellcheck disable=SC1091
source scripts/env.sh
set -u
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
echo "[test] pytest (test/test_lint.py runs ruff with flake8 + pep257 rules, see pyproject.toml)"
python -m pytest "$@"
