#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) with pinned dependencies, install
# this package into it (editable), and build the ROS 2 messages from PyPI wheels.
# Idempotent: when nothing it depends on changed, it only checks a stamp and returns.
#
# torch (scripts/torch_constraints.py decides): by default the venv gets requirements/torch.txt.
# With TAGCLIP_SYSTEM_TORCH=1, or on a Jetson (/etc/nv_tegra_release; TAGCLIP_SYSTEM_TORCH=0 turns
# it off), the venv is made with --system-site-packages so that JetPack's CUDA torch is used,
# torch.txt is never installed, and pip is constrained to the torch/torchvision already there:
# it fails rather than replace them with builds that cannot see the GPU (docs/jetson.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TAGCLIP_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
PIP=(--quiet --disable-pip-version-check)

torch_mode=$("$PYTHON" scripts/torch_constraints.py mode)  # pinned or system

# setup.py reads the package metadata (commands, version, dependencies) from package.xml and
# requirements/core.txt: a change to any of them, or to the torch mode, reinstalls.
stamp_inputs() {
  cat requirements/*.txt pyproject.toml setup.py package.xml; "$PYTHON" --version; echo "torch: $torch_mode"
}
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
stamp=$VENV/.tagclip-bootstrap

# The pip arguments that bring torch: torch.txt, or constraints keeping the system's torch.
torch_requirements() {
  if [ "$torch_mode" = pinned ]; then
    [ -x "$VENV/bin/python" ] || { echo "[bootstrap] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
    torch_args=(-r requirements/torch.txt)
    return
  fi
  if [ -x "$VENV/bin/python" ] && ! grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg"; then
    echo "[bootstrap] $VENV was made without --system-site-packages, so it cannot see the system's" \
      "torch: remove it and run again" >&2
    exit 1
  fi
  [ -x "$VENV/bin/python" ] || {
    echo "[bootstrap] creating $VENV (with the system's site-packages: keeping its torch)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  }
  local constraints=$VENV/.tagclip-torch-constraints.txt
  "$VENV/bin/python" scripts/torch_constraints.py constraints > "$constraints"
  echo "[bootstrap] keeping the system's torch: $(grep -v '^#' "$constraints" | tr '\n' ' ')"
  torch_args=(-c "$constraints")
}

# A first install puts ~6.2 GB in the venv (pinned torch is a CUDA build) and unpacks wheels in
# $TMPDIR: when the disk is short, say so before pip fails half-way with "No space left on device".
FIRST_INSTALL_GB=8
warn_if_disk_short() {
  [ "$torch_mode" = pinned ] || return 0
  compgen -G "$VENV/lib/python*/site-packages/torch" >/dev/null && return 0
  local free_kb
  free_kb=$(df -Pk "$VENV" "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR > 1 {print $4}' | sort -n | head -n 1)
  [ -n "$free_kb" ] && [ "$free_kb" -lt $((FIRST_INSTALL_GB * 1024 * 1024)) ] || return 0
  echo "[bootstrap] warning: only $((free_kb / 1024 / 1024)) GB free for $VENV or ${TMPDIR:-/tmp}," \
    "and a first install needs about $FIRST_INSTALL_GB GB: pip may stop with 'No space left on device'" >&2
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # A first run interrupted while making the venv leaves one without pip: make it again.
  if [ -e "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "[bootstrap] $VENV has no working pip (an interrupted first run?): making it again"
    rm -rf "$VENV"
  fi
  torch_requirements
  warn_if_disk_short
  echo "[bootstrap] installing pinned dependencies (first time: a few minutes)"
  "$VENV/bin/python" -m pip install "${PIP[@]}" "${torch_args[@]}" \
    -r requirements/core.txt -r requirements/ros.txt -r requirements/test.txt \
    -r requirements/ray.txt
  "$VENV/bin/python" -m pip install "${PIP[@]}" --no-deps \
    --config-settings editable_mode=compat -e .
  echo "$want" > "$stamp"
fi

scripts/build_msgs.sh "$VENV" "$ROOT/build/msgs" "$ROOT/install"
