#!/usr/bin/env bash
# Build and install tagclip_ros's interfaces (msg/*.msg, srv/*.srv), and the vision_msgs ones it
# publishes (third_party/vision_msgs), with rosidl/ament_cmake against a venv that holds the
# ROS 2 PyPI wheels (requirements/ros.txt) -- no ROS distro needed. vision_msgs has no wheel;
# third_party/README.md says why the copy is wire-compatible with the distro's package.
#
#   scripts/build_msgs.sh VENV BUILD_DIR INSTALL_PREFIX
#
# Both packages go into INSTALL_PREFIX, vision_msgs first. Idempotent, per package: nothing is
# built (~0.2 s) when INSTALL_PREFIX's stamp for it is newer than its inputs (vision_msgs:
# third_party/vision_msgs; tagclip_ros: msg/, srv/, CMakeLists.txt, package.xml,
# tagclip_ros/__init__.py, scripts/tagger_node, scripts/image_source, launch/, config/);
# otherwise an incremental CMake build (~3 s; ~20 s each from scratch). Also rewrites, once,
# the wheel builder's include paths in VENV/share/*/cmake/*.cmake, which a `colcon build`
# against VENV needs too. Then `. scripts/ros_env.sh VENV INSTALL_PREFIX` to use the messages.
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

# 2. Skip when both packages are up to date. A stamp records the inputs' identity too (venv,
#    source, prefix) and gets its build's start time, so an edit made during a build triggers
#    the next one.
STAMP_ID="venv=$VENV src=$SRC prefix=$PREFIX"
VISION_SRC="$SRC/third_party/vision_msgs"
VISION_STAMP="$PREFIX/.vision_msgs.stamp"
TAGCLIP_STAMP="$PREFIX/.tagclip_ros_msgs.stamp"
TAGCLIP_INPUTS=("$SRC/msg" "$SRC/srv" "$SRC/CMakeLists.txt" "$SRC/package.xml" "$SRC/tagclip_ros/__init__.py"
                "$SRC/scripts/tagger_node" "$SRC/scripts/image_source")
for d in launch config; do
  if [ -d "$SRC/$d" ]; then TAGCLIP_INPUTS+=("$SRC/$d"); fi
done

# up_to_date STAMP INPUT...: STAMP names this venv/source/prefix and no INPUT is newer than it.
up_to_date() {
  local stamp=$1
  shift
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$STAMP_ID" ] \
    && [ -z "$(find "$@" -newer "$stamp" -print -quit)" ]
}
vision_ok=0 tagclip_ok=0
up_to_date "$VISION_STAMP" "$VISION_SRC" && vision_ok=1
up_to_date "$TAGCLIP_STAMP" "${TAGCLIP_INPUTS[@]}" && tagclip_ok=1
[ $vision_ok = 1 ] && [ $tagclip_ok = 1 ] && exit 0

unset _ROS_WHEELS_BOOTSTRAP_COMPLETE  # let the venv's bootstrapper extend LD_LIBRARY_PATH
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# The generators run in the venv's python; its libraries must be loadable by the build tools.
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"

# 3. build_package NAME SOURCE CMAKE_BUILD_DIR STAMP [CMAKE_ARG...]: configure (first time, or
#    when the cache was made for another venv/source/prefix), build, install, stamp.
#    rosidl installs whole generated folders, so a removed .msg or .srv would live on in the
#    build folder and the prefix: when the set of interface files changes, build afresh and then
#    delete from the prefix what the previous install put there and this one did not.
build_package() {
  local name=$1 source=$2 build=$3 stamp=$4 start gen=() messages old_manifest=
  shift 4
  start=$(date +%s.%N)
  messages=$(cd "$source" && ls msg/*.msg && { ls srv/*.srv 2>/dev/null || true; })
  if [ -f "$build/install_manifest.txt" ] && [ "$(cat "$build/.tagclip_messages" 2>/dev/null)" != "$messages" ]; then
    old_manifest=$(cat "$build/install_manifest.txt")
    rm -rf "${build:?}"
  fi
  mkdir -p "$build"
  # A build folder configured for another venv/source/prefix keeps stale find_package()
  # results in its cache: start its configuration afresh.
  if [ -f "$build/CMakeCache.txt" ] && [ "$(cat "$build/.tagclip_build_id" 2>/dev/null)" != "$STAMP_ID" ]; then
    rm -f "$build/CMakeCache.txt"
  fi
  printf '%s' "$STAMP_ID" >"$build/.tagclip_build_id"
  if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
  cmake -S "$source" -B "$build" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DBUILD_TESTING=OFF \
    "$@" \
    --no-warn-unused-cli >"$build/configure.log" 2>&1 \
    || { cat "$build/configure.log" >&2; exit 1; }
  cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 \
    || { tail -n 60 "$build/build.log" >&2; exit 1; }
  cmake --install "$build" >"$build/install.log" 2>&1 \
    || { cat "$build/install.log" >&2; exit 1; }
  printf '%s' "$messages" >"$build/.tagclip_messages"
  if [ -n "$old_manifest" ]; then
    comm -23 <(sort <<<"$old_manifest") <(sort "$build/install_manifest.txt") \
      | while IFS= read -r file; do
          rm -f "$file"
          case $file in *.py) rm -f "${file%/*}/__pycache__/$(basename "$file" .py)".*.pyc ;; esac
        done
  fi
  printf '%s' "$STAMP_ID" >"$stamp"
  touch -d "@$start" "$stamp"
  echo "build_msgs.sh: $name messages installed in $PREFIX"
}

# 4. vision_msgs first (tagclip_ros's package.xml depends on it), straight from its folder.
if [ $vision_ok = 0 ]; then
  build_package vision_msgs "$VISION_SRC" "$BUILD_DIR/vision_msgs" "$VISION_STAMP"
fi

# 5. tagclip_ros. CMake refuses exported include paths inside the source tree, and the venv's
#    numpy include dir is one when the venv lives in the repository (.venv): configure from a
#    copy of what the build reads instead.
if [ $tagclip_ok = 0 ]; then
  COPY="$BUILD_DIR/src"
  mkdir -p "$COPY/tagclip_ros" "$COPY/scripts"
  cp -p "$SRC/CMakeLists.txt" "$SRC/package.xml" "$COPY/"
  cp -p "$SRC/tagclip_ros/__init__.py" "$COPY/tagclip_ros/"
  cp -p "$SRC/scripts/tagger_node" "$SRC/scripts/image_source" "$COPY/scripts/"
  for d in msg srv launch config; do
    if [ -d "$SRC/$d" ]; then rm -rf "${COPY:?}/$d"; cp -rp "$SRC/$d" "$COPY/$d"; fi
  done
  build_package tagclip_ros "$COPY" "$BUILD_DIR/cmake" "$TAGCLIP_STAMP" \
    -DTAGCLIP_ROS_INSTALL_PYTHON_SOURCES=OFF
fi
