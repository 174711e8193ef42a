"""Entry point of the `tagger_node` executable."""
from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def main(args: list[str] | None = None) -> int:
    """Run the tagger node until Ctrl-C or SIGTERM; exit quietly, without a stack trace."""
    rclpy.init(args=args if args is not None else sys.argv)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    from .tagger import TaggerNode  # after init: importing torch takes seconds
    node = TaggerNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.worker is not None:
            node.worker.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
