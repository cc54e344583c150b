# Source me (bash): the .venv and the colcon workspace built by scripts/setup.sh, with the
# llmos-* tools on PATH.
#   source scripts/env.sh
_llmos_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_llmos_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_llmos_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_llmos_root/.venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# shellcheck disable=SC1091
source "$_llmos_root/install/setup.bash"
# The command-line tools (llmos-train, llmos-eval, llmos-replay, llmos-demo) and the nodes live in
# lib/llmos_ros, where `ros2 run` looks; put them on PATH as the README uses them.
case ":$PATH:" in
  *":$_llmos_root/install/llmos_ros/lib/llmos_ros:"*) ;;
  *) export PATH="$_llmos_root/install/llmos_ros/lib/llmos_ros:$PATH" ;;
esac
unset _llmos_root
