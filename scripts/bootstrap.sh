#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) with pinned dependencies, install
# this package into it (editable), and build the ROS 2 messages from PyPI wheels.
# Idempotent: when nothing it depends on changed, it only checks a stamp and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TAGCLIP_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# setup.py reads the package metadata (commands, version, dependencies) from package.xml and
# requirements/core.txt: a change to any of them reinstalls.
stamp_inputs() { cat requirements/*.txt pyproject.toml setup.py package.xml; "$PYTHON" --version; }
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
stamp=$VENV/.tagclip-bootstrap

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || { echo "[bootstrap] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  echo "[bootstrap] installing pinned dependencies (first time: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r requirements/core.txt -r requirements/ros.txt -r requirements/test.txt
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --config-settings editable_mode=compat -e .
  echo "$want" > "$stamp"
fi

scripts/build_msgs.sh "$VENV" "$ROOT/build/msgs" "$ROOT/install"
