"""Entry point of the `tagger_node` executable (also `python -m tagclip_ros.node.main`)."""
from __future__ import annotations

import signal
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from .commands import exit_now, exit_within_deadline
from .param_checks import ParameterError

_SIGNALLED = threading.Event()  # SIGINT or SIGTERM came: an error out of spin is its doing
_BUILT = threading.Event()  # the node exists: from now on a signal ends it through its release


def main(args: list[str] | None = None) -> int:
    """Run the tagger node until Ctrl-C or SIGTERM, then exit with status 0 within about a
    second (launch escalates to SIGTERM after 5 s), without a stack trace, even in the middle of
    loading the model or of a frame. A parameter value given at start that the node cannot use:
    one sentence on stderr and exit status 2."""
    # SIGTERM becomes KeyboardInterrupt, as SIGINT is. Set before rclpy.init, so that rclpy's own
    # handler (which wakes the executor at once) chains to it, as it does to Python's for SIGINT.
    # rclpy's handler also shuts the context down, and the KeyboardInterrupt is raised wherever
    # the main thread is: inside rclpy taking a message or making a wait set it comes out as
    # rclpy's error instead (a RuntimeError from pybind11, an RCLError), equally an interrupt.
    # Until the node exists (rclpy.init, importing torch: seconds), a signal ends the process at
    # once (a KeyboardInterrupt raised inside the import machinery's callbacks would be printed
    # and lost); before this, commands.exit_quietly_on_signals does the same.
    node = None
    worker_ended = True
    status = 0
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        rclpy.init(args=args if args is not None else sys.argv)
        from .tagger import TaggerNode  # after init: importing torch takes seconds
        node = TaggerNode()
        _BUILT.set()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParameterError as exc:
        print(f"tagger_node: {exc}", file=sys.stderr)
        status = 2
    except Exception:  # noqa: BLE001 - see _SIGNALLED
        if not _SIGNALLED.is_set():
            raise
    finally:
        _ignore_signals()  # a second Ctrl-C must not interrupt the cleanup with a stack trace
        if node is not None:
            worker_ended = node.release()
            node.destroy_node()
        rclpy.try_shutdown()
        _ignore_signals()  # try_shutdown put the handlers from before init back
    if not worker_ended:
        exit_now(status)
    return status


def _interrupt(signum: int, frame: object) -> None:
    exit_within_deadline(0)
    _SIGNALLED.set()
    if not _BUILT.is_set():
        exit_now(0)  # nothing to release yet (rclpy's handler has shut the context down)
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
