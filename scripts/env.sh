# Source me (bash): the .venv and the colcon workspace built by scripts/setup.sh.
#   source scripts/env.sh
_llmos_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_llmos_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_llmos_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_llmos_root/.venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# shellcheck disable=SC1091
source "$_llmos_root/install/setup.bash"
unset _llmos_root
