#!/usr/bin/env bash
# Build and install tagclip_ros's messages (msg/*.msg) with rosidl/ament_cmake against a venv
# that holds the ROS 2 PyPI wheels (requirements/ros.txt) -- no ROS distro needed.
#
#   scripts/build_msgs.sh VENV BUILD_DIR INSTALL_PREFIX
#
# Idempotent: does nothing (~0.2 s) when INSTALL_PREFIX's stamp is newer than msg/,
# CMakeLists.txt, package.xml, tagclip_ros/__init__.py and scripts/tagger_node; otherwise an
# incremental CMake build (~3 s; ~20 s from scratch). Also rewrites, once, the wheel builder's
# include paths in VENV/share/*/cmake/*.cmake, which a `colcon build` against VENV needs too.
# Then `. scripts/ros_env.sh VENV INSTALL_PREFIX` to use the messages.
#
# How `tagclip_ros` resolves in a development venv (hand-written code pip-installed, editable or
# not; messages built here): rosidl generates a Python package folder also named `tagclip_ros`
# (holding `msg/` and the C extensions) in INSTALL_PREFIX/lib/python3.X/site-packages. Two
# folders of the same name do not merge by themselves, so the hand-written
# tagclip_ros/__init__.py calls pkgutil.extend_path, and this build installs that __init__.py
# (and no other hand-written module: -DTAGCLIP_ROS_INSTALL_PYTHON_SOURCES=OFF) over the
# generated (empty) one. With the prefix on PYTHONPATH (ros_env.sh), the prefix's copy of
# __init__.py runs first; `tagclip_ros.msg` comes from the prefix, and every hand-written
# module from the source tree (setuptools' editable finder, or extend_path when the source's
# parent folder is on sys.path, e.g. the cwd) -- never from a stale copy. Keep __init__.py
# minimal: the prefix's copy is what runs, refreshed by this script.
# A colcon/distro build installs all modules (the option defaults to ON).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 VENV BUILD_DIR INSTALL_PREFIX" >&2
  exit 2
fi

abspath() { mkdir -p "$1" && (cd "$1" && pwd -P); }
VENV=$(cd "$1" && pwd -P)
BUILD_DIR=$(abspath "$2")
PREFIX=$(abspath "$3")
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "build_msgs.sh: no python at $PY" >&2; exit 1; }

# 1. Rewrite the wheel builder's include paths in the exported CMake targets (idempotent:
#    only files that still name /opt/python are touched).
read -r PY_INC NP_INC < <(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -c \
  'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())')
OLD_PY_INC=/opt/python/cp311-cp311/include/python3.11
OLD_NP_INC=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
mapfile -t stale < <(grep -l -F /opt/python/ "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
if [ ${#stale[@]} -gt 0 ]; then
  sed -i -e "s#${OLD_PY_INC}#${PY_INC}#g" -e "s#${OLD_NP_INC}#${NP_INC}#g" "${stale[@]}"
  if grep -l -F /opt/python/ "${stale[@]}" >&2; then
    echo "build_msgs.sh: the files above still name /opt/python (a new wheel layout?)" >&2
    exit 1
  fi
fi

# 2. Skip when up to date. The stamp records the inputs' identity too (venv, source, prefix).
STAMP="$PREFIX/.tagclip_ros_msgs.stamp"
STAMP_ID="venv=$VENV src=$SRC prefix=$PREFIX"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_ID" ] \
   && [ -z "$(find "$SRC/msg" "$SRC/CMakeLists.txt" "$SRC/package.xml" \
                   "$SRC/tagclip_ros/__init__.py" "$SRC/scripts/tagger_node" "$SRC/scripts/image_source" \
                   $(ls -d "$SRC/launch" "$SRC/config" 2>/dev/null) \
                   -newer "$STAMP" -print -quit)" ]; then
  exit 0
fi

# 3. Configure (first time, or when the cache points elsewhere), build, install. The stamp
#    gets the build's start time, so an edit made during the build triggers the next one.
start=$(date +%s.%N)
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE  # let the venv's bootstrapper extend LD_LIBRARY_PATH
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# The generators run in the venv's python; its libraries must be loadable by the build tools.
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"

# A build folder configured for another venv/source/prefix keeps stale find_package() results
# in its cache: start its configuration afresh.
if [ -f "$BUILD_DIR/cmake/CMakeCache.txt" ] && \
   [ "$(cat "$BUILD_DIR/.tagclip_build_id" 2>/dev/null)" != "$STAMP_ID" ]; then
  rm -f "$BUILD_DIR/cmake/CMakeCache.txt"
fi
printf '%s' "$STAMP_ID" >"$BUILD_DIR/.tagclip_build_id"
gen=()
if [ ! -f "$BUILD_DIR/cmake/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
# CMake refuses exported include paths inside the source tree, and the venv's numpy include
# dir is one when the venv lives in the repository (.venv): configure from a copy instead.
COPY="$BUILD_DIR/src"
mkdir -p "$COPY/tagclip_ros" "$COPY/scripts"
cp -p "$SRC/CMakeLists.txt" "$SRC/package.xml" "$COPY/"
cp -p "$SRC/tagclip_ros/__init__.py" "$COPY/tagclip_ros/"
cp -p "$SRC/scripts/tagger_node" "$SRC/scripts/image_source" "$COPY/scripts/"
for d in msg launch config; do
  if [ -d "$SRC/$d" ]; then rm -rf "${COPY:?}/$d"; cp -rp "$SRC/$d" "$COPY/$d"; fi
done
cmake -S "$COPY" -B "$BUILD_DIR/cmake" "${gen[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DTAGCLIP_ROS_INSTALL_PYTHON_SOURCES=OFF \
  -DBUILD_TESTING=OFF \
  --no-warn-unused-cli >"$BUILD_DIR/configure.log" 2>&1 \
  || { cat "$BUILD_DIR/configure.log" >&2; exit 1; }
cmake --build "$BUILD_DIR/cmake" -j "$(nproc)" >"$BUILD_DIR/build.log" 2>&1 \
  || { tail -n 60 "$BUILD_DIR/build.log" >&2; exit 1; }
cmake --install "$BUILD_DIR/cmake" >"$BUILD_DIR/install.log" 2>&1 \
  || { cat "$BUILD_DIR/install.log" >&2; exit 1; }
printf '%s' "$STAMP_ID" >"$STAMP"
touch -d "@$start" "$STAMP"
echo "build_msgs.sh: tagclip_ros messages installed in $PREFIX"
