"""`image_source`: publish a folder of images as a camera would, and print the tags that come back.

The main job's stand-in for a camera: it needs no ROS distro and no hardware. It waits until
someone subscribes, then publishes each image (raw rgb8 or JPEG) with a fresh stamp, at most at
`rate` Hz and, with `paced`, only once the previous image's tags came back (or 30 s passed);
the tags for each stamp are printed as they arrive. With `once` it exits after one pass.
"""
from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.image import ImageError, image_files, read_image
from ..msg import TagArray
from .conversions import rgb_to_image

PACE_TIMEOUT_S = 30.0
DEFAULT_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "samples")


class ImageSource(Node):
    """Publishes `folder`'s images in turn at `rate` Hz; prints each TagArray it receives."""

    def __init__(self) -> None:
        super().__init__("tagclip_image_source")
        self.folder = self.declare_parameter("folder", DEFAULT_FOLDER).value
        self.compressed = self.declare_parameter("compressed", False).value
        self.once = self.declare_parameter("once", False).value
        self.paced = self.declare_parameter("paced", True).value
        rate = self.declare_parameter("rate", 2.0).value
        self.images = self._read_folder()
        self.sent: dict[tuple[int, int], str] = {}
        self.received = 0
        self.last_sent = 0.0
        kind, topic = (CompressedImage, "image/compressed") if self.compressed else (Image, "image")
        self.publisher = self.create_publisher(kind, topic, 10)
        self.create_subscription(TagArray, "tags", self._on_tags, 10)
        self.create_timer(1.0 / rate, self._publish_next)
        self.index = 0

    def _read_folder(self) -> list[tuple[str, np.ndarray]]:
        images = []
        for path in image_files(self.folder):
            try:
                images.append((os.path.basename(path), read_image(path)))
            except ImageError as exc:
                self.get_logger().warning(f"skipping {exc}")
        if not images:
            raise ImageError(f"no readable images in {self.folder}")
        return images

    def _publish_next(self) -> None:
        if self.publisher.get_subscription_count() == 0:
            return
        waiting = self.paced and self.sent and time.monotonic() - self.last_sent < PACE_TIMEOUT_S
        if waiting or (self.once and self.index >= len(self.images)):
            return
        self.last_sent = time.monotonic()
        name, rgb = self.images[self.index % len(self.images)]
        self.index += 1
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id="camera")
        self.sent[(header.stamp.sec, header.stamp.nanosec)] = name
        if self.compressed:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            self.publisher.publish(CompressedImage(header=header, format="jpeg", data=jpeg.tobytes()))
        else:
            self.publisher.publish(rgb_to_image(rgb, header))

    def _on_tags(self, msg: TagArray) -> None:
        name = self.sent.pop((msg.header.stamp.sec, msg.header.stamp.nanosec), "?")
        tags = ", ".join(f"{t.label} ({t.score:.4f})" for t in msg.tags)
        print(f"{name}: {tags}", flush=True)
        self.received += 1
        if self.once and self.received >= len(self.images):
            raise SystemExit(0)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    try:
        node = ImageSource()
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
