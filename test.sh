#!/usr/bin/env bash
# Run the test suite: bootstraps .venv (pinned torch, open_clip, ROS 2 wheels) and the messages
# on first use, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
. scripts/ros_env.sh .venv install
exec .venv/bin/python -m pytest "$@"
