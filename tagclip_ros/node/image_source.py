"""`image_source`: publish a folder, a video file or a camera as a camera driver would, and print
the tags that come back.

The main job's stand-in for a camera, and a driver for users without one: it needs no ROS distro
and no camera driver. `source` is a folder, an image or video file (any format OpenCV reads),
`/dev/videoN` or a camera index (see `core.frames`). Once someone subscribes, it publishes a frame
per tick of `rate` Hz, raw rgb8 on `image` or JPEG on `image/compressed`, stamped with the node
clock's current time and `frame_id`. With `paced`, a frame goes out only once the previous one's
tags came back (or 30 s passed). With `loop`, a folder or video starts again at its end; without,
the node exits after one pass, when the last tags are in (`paced`) or every subscriber has
acknowledged every frame. The tags received for each frame are printed as they arrive.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import cv2
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.frames import Frame, SourceError, open_source, stream
from ..msg import TagArray
from .conversions import rgb_to_image

PACE_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 10.0
MAX_PENDING = 100  # stamps remembered for printing tags; bounds memory when nobody answers
DEFAULT_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "samples")


@dataclass(frozen=True)
class Settings:
    """The node's parameters, checked."""

    source: str
    rate: float
    loop: bool
    paced: bool
    compressed: bool
    frame_id: str


def declare_settings(node: Node) -> Settings:
    """Declare and check the parameters; a bad value raises ValueError with one sentence.
    `folder` (alias of `source`) and `once` (= `loop:=false`) are kept for older command lines."""
    any_type = ParameterDescriptor(dynamic_typing=True)  # `source:=0`, `rate:=5` arrive as ints
    source = str(node.declare_parameter("source", "", any_type).value)
    folder = str(node.declare_parameter("folder", "").value)
    if source and folder and source != folder:
        raise ValueError("give the images as `source` only (`folder` is its old name)")
    once = node.declare_parameter("once", False).value
    rate = node.declare_parameter("rate", 2.0, any_type).value
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
            math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of frames per second, not {rate!r}")
    return Settings(source=source or folder or DEFAULT_SOURCE, rate=float(rate),
                    loop=node.declare_parameter("loop", True).value and not once,
                    paced=node.declare_parameter("paced", True).value,
                    compressed=node.declare_parameter("compressed", False).value,
                    frame_id=node.declare_parameter("frame_id", "camera").value)


class ImageSource(Node):
    """Publishes the source's frames at `rate` Hz; prints each TagArray it receives.
    `exit_code` turns from None to the process's exit status when the node is done."""

    def __init__(self) -> None:
        super().__init__("tagclip_image_source")
        self.settings = declare_settings(self)
        self.source = open_source(self.settings.source, self.get_logger().warning)
        self.frames = stream(self.source, self.settings.loop)
        self.exit_code: int | None = None
        self.sent: dict[tuple[int, int], str] = {}
        self.last_sent = 0.0
        if self.settings.compressed:
            self.publisher = self.create_publisher(CompressedImage, "image/compressed", 10)
        else:
            self.publisher = self.create_publisher(Image, "image", 10)
        self.create_subscription(TagArray, "tags", self._on_tags, 10)
        self.create_timer(1.0 / self.settings.rate, self._tick)
        self.get_logger().info(f"publishing {self.source} on {self.publisher.topic_name} "
                               "once a subscriber appears")

    def _tick(self) -> None:
        """Publish the next frame, unless nobody listens yet or the last tags are still due."""
        if self.exit_code is not None or self.publisher.get_subscription_count() == 0:
            return
        if self._waiting_for_tags():
            return
        try:
            frame = next(self.frames)
        except StopIteration:
            self._finish()
            return
        except SourceError as exc:
            self.get_logger().error(str(exc))
            self.exit_code = 1
            return
        self._publish(frame)

    def _waiting_for_tags(self) -> bool:
        """With `paced`: true while the last frame's tags are due; gives up on them after 30 s."""
        if not (self.settings.paced and self.sent):
            return False
        if time.monotonic() - self.last_sent < PACE_TIMEOUT_S:
            return True
        self.get_logger().warning(f"no tags within {PACE_TIMEOUT_S:.0f} s for "
                                  f"{', '.join(self.sent.values())}; going on")
        self.sent.clear()
        return False

    def _publish(self, frame: Frame) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.settings.frame_id)
        self.sent[(header.stamp.sec, header.stamp.nanosec)] = frame.name
        if len(self.sent) > MAX_PENDING:
            del self.sent[next(iter(self.sent))]
        self.last_sent = time.monotonic()
        if self.settings.compressed:
            _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
            msg = CompressedImage(header=header, format="jpeg", data=jpeg.tobytes())
            self.publisher.publish(msg)
        else:
            self.publisher.publish(rgb_to_image(frame.rgb, header))

    def _finish(self) -> None:
        """End of a single pass: make sure subscribers got every frame, then exit."""
        if not self.publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
            self.get_logger().warning("not every subscriber acknowledged the last frames")
        self.get_logger().info(f"published all of {self.source}")
        self.exit_code = 0

    def _on_tags(self, msg: TagArray) -> None:
        name = self.sent.pop((msg.header.stamp.sec, msg.header.stamp.nanosec), "?")
        tags = ", ".join(f"{t.label} ({t.score:.4f})" for t in msg.tags)
        print(f"{name}: {tags}", flush=True)

    def close(self) -> None:
        """Release the source (a camera) and the node."""
        self.source.close()
        self.destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run until the pass ends, the source fails, or Ctrl-C / SIGTERM. Bad parameters or an
    unusable source: one sentence on stderr and exit status 2, never a stack trace."""
    rclpy.init(args=args if args is not None else sys.argv)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    try:
        node = ImageSource()
    except (ValueError, ParameterException) as exc:
        print(f"image_source: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while node.exit_code is None and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        rclpy.try_shutdown()
    return node.exit_code or 0


if __name__ == "__main__":
    sys.exit(main())
