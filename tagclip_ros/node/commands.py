"""The `tagger_node` and `image_source` executables.

Both need ROS 2 (rclpy, the standard messages) and this package's generated messages on the
path, which a shell has only after sourcing an environment. Each executable checks that first,
so that a shell without it gets one sentence saying what to source instead of a traceback.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import NoReturn

from . import exit_timer

# What each executable imports before it starts, in the order a missing one is named.
NEEDED = ("rclpy", "sensor_msgs.msg", "vision_msgs.msg", "tagclip_ros.msg")
SOURCE_HINT = ("source the environment first: `. scripts/ros_env.sh .venv install` in this "
               "repository, or `source install/setup.bash` in a colcon workspace")
# After Ctrl-C or SIGTERM a program ends by then, even if the clean-up (destroying the node, the
# DDS participant) hangs, as it can on a loaded machine; launch escalates to SIGTERM at 5 s.
EXIT_DEADLINE_S = 3.0
# ... or this much later, if the hang holds the GIL so that the Python timer cannot run (exit_timer)
NATIVE_GRACE_S = 1.0
_deadline: list[threading.Timer] = []  # the timer exit_within_deadline started, once


def exit_quietly_on_signals() -> None:
    """Until the program sets its own handling: Ctrl-C or SIGTERM while modules import ends the
    process at once with status 0, without a stack trace (an exception raised there could land
    in the import machinery's callbacks, which print it and go on)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_at_once)


def exit_now(status: int) -> NoReturn:
    """End the process now, output flushed, without Python's shutdown: nothing it would run is
    needed, and it could wait on (or, torch running on a thread, abort in) work being dropped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def exit_within_deadline(status: int = 0) -> None:
    """From now on the process ends with `status` after EXIT_DEADLINE_S at the latest (a
    second later if a C call holds the GIL then): the clean-up after a signal runs, but cannot
    keep the program alive (a second call changes nothing)."""
    if not _deadline:
        _deadline.append(threading.Timer(EXIT_DEADLINE_S, exit_now, (status,)))
        _deadline[0].daemon = True
        _deadline[0].start()
        exit_timer.arm(EXIT_DEADLINE_S + NATIVE_GRACE_S, status)


def _exit_at_once(signum: int, frame: object) -> None:
    exit_now(0)


def missing_module() -> str | None:
    """The first of NEEDED that cannot be imported, or None when all can."""
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def ros_ready(program: str) -> bool:
    """Whether ROS 2 and the messages import; if not, say what to do on stderr."""
    missing = missing_module()
    if missing:
        print(f"{program}: cannot import {missing}; {SOURCE_HINT}", file=sys.stderr)
    return missing is None


def tagger_node() -> int:
    """Run the tagger node (see `node.main`); status 2 when ROS 2 is not on the path."""
    exit_quietly_on_signals()
    if not ros_ready("tagger_node"):
        return 2
    from .main import main
    return main()


def image_source() -> int:
    """Run the image source (see `node.image_source`); status 2 when ROS 2 is not on the path."""
    exit_quietly_on_signals()
    if not ros_ready("image_source"):
        return 2
    from .image_source import main
    return main()
