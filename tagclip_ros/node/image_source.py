"""`image_source`: publish a folder of images as a camera would, and print the tags that come back.

The main job's stand-in for a camera: it needs no ROS distro and no hardware. Each image is
published (raw rgb8 or JPEG) with a fresh stamp and the tags for that stamp are printed as they
arrive; with `count` > 0 it exits after that many tag messages.
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.image import ImageError, read_image
from ..msg import TagArray
from .conversions import rgb_to_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "samples")


class ImageSource(Node):
    """Publishes `folder`'s images in turn at `rate` Hz; prints each TagArray it receives."""

    def __init__(self) -> None:
        super().__init__("tagclip_image_source")
        self.folder = self.declare_parameter("folder", DEFAULT_FOLDER).value
        self.compressed = self.declare_parameter("compressed", False).value
        self.count = self.declare_parameter("count", 0).value
        rate = self.declare_parameter("rate", 1.0).value
        self.images = self._read_folder()
        self.sent: dict[tuple[int, int], str] = {}
        self.received = 0
        kind, topic = (CompressedImage, "image/compressed") if self.compressed else (Image, "image")
        self.publisher = self.create_publisher(kind, topic, 10)
        self.create_subscription(TagArray, "tags", self._on_tags, 10)
        self.create_timer(1.0 / rate, self._publish_next)
        self.index = 0

    def _read_folder(self) -> list[tuple[str, np.ndarray]]:
        names = sorted(f for f in os.listdir(self.folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        images = []
        for name in names:
            try:
                images.append((name, read_image(os.path.join(self.folder, name))))
            except ImageError as exc:
                self.get_logger().warning(f"skipping {exc}")
        if not images:
            raise ImageError(f"no readable images in {self.folder}")
        return images

    def _publish_next(self) -> None:
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
        if self.count and self.received >= self.count:
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
