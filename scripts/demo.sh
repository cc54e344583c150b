#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job on the built-in simulated sensors:
# simulate a bag, train a model on it (both once), then live perception with a summary.
# Arguments go to llmos-demo, e.g. `bash scripts/demo.sh --duration 60`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
set +u
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
set -u
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec python -m llmos_ros.nodes.demo "$@"
