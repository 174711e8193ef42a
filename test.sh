#!/usr/bin/env bash
# Run the test suite: bootstraps .venv (pinned torch, open_clip, ROS 2 wheels) and the messages
# on first use, then runs pytest in two worker processes, each test file whole in one (most
# tests wait on nodes and processes, so two share a 2-core machine well). Extra arguments go to
# pytest (`-n 0`: one process).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
. scripts/ros_env.sh .venv install
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
