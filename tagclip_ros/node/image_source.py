"""`image_source`: publish a folder, a video file or a camera as a camera driver would, and print
the tags that come back.

The main job's stand-in for a camera, and a driver for users without one: it needs no ROS distro
and no camera driver. `source` is a folder, an image or video file (any format OpenCV reads),
`/dev/videoN` or a camera index (see `core.frames`). Once someone subscribes, it publishes a frame
per tick of `rate` Hz, raw rgb8 on `image` or JPEG on `image/compressed`, stamped with the node
clock's current time and `frame_id`. With `paced`, a frame goes out only once the previous one's
tags came back (or 30 s passed); until then it is sent again, with the same header, every
`resend_after` s: a best-effort subscriber that has not yet matched this publisher drops what it
gets, and the tagger answers a repeated header only once. With `loop`, a folder or video starts
again at its end; without, the node exits after one pass, when the last tags are in (`paced`)
or every subscriber has acknowledged every frame. The publisher is reliable and transient-local
(the last `HISTORY` frames): discovery is not symmetric, and a subscriber this node already
counts may not yet have matched it; a single pass therefore goes on from its first frame only
once every reliable subscriber has acknowledged it, and a transient-local subscriber gets that
frame on matching. The tags received for each frame are printed as they arrive.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.frames import Frame, SourceError, open_source, stream
from ..msg import TagArray
from .commands import exit_within_deadline
from .conversions import rgb_to_compressed, rgb_to_image
from .param_checks import given_at_start, type_reason, unknown_parameter_warnings

PACE_TIMEOUT_S = 30.0
RESEND_AFTER_S = 2.0
ACK_TIMEOUT_S = 10.0
MAX_PENDING = 100  # stamps remembered for printing tags; bounds memory when nobody answers
STOP = threading.Event()  # Ctrl-C or SIGTERM came
HISTORY = 10  # frames kept for reliable delivery and for transient-local subscribers
PUBLISHED = QoSProfile(depth=HISTORY, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
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
    resend_after: float


# The parameters and their defaults, whose type each value must have (a whole number is also a
# number: `rate:=5`); `source` is text or a camera index (`source:=0`).
PARAMETERS = {"source": "", "folder": "", "once": False, "rate": 2.0, "resend_after": RESEND_AFTER_S,
              "loop": True, "paced": True, "compressed": False, "frame_id": "camera"}


def declare_settings(node: Node) -> Settings:
    """Declare and check the parameters; a bad value raises ValueError with one sentence.
    `folder` (alias of `source`) and `once` (= `loop:=false`) are kept for older command lines."""
    value = {name: node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True)).value
             for name, default in PARAMETERS.items()}  # typed here, with a sentence, not by rclpy
    for name, default in PARAMETERS.items():
        reason = type_reason(name, value[name], default)
        if reason and not (name == "source" and type(value[name]) is int):  # a camera index
            raise ValueError(reason)
    source, folder, once = str(value["source"]), value["folder"], value["once"]
    if source and folder and source != folder:
        raise ValueError("give the images as `source` only (`folder` is its old name)")
    rate = value["rate"]
    if not is_number(rate) or rate <= 0:
        raise ValueError(f"rate must be a positive number of frames per second, not {rate!r}")
    resend_after = value["resend_after"]
    if not is_number(resend_after) or resend_after < 0:
        raise ValueError(f"resend_after must be a number of seconds (0: never resend), "
                         f"not {resend_after!r}")
    return Settings(source=source or folder or DEFAULT_SOURCE, rate=float(rate),
                    loop=value["loop"] and not once, paced=value["paced"],
                    compressed=value["compressed"], frame_id=value["frame_id"],
                    resend_after=float(resend_after))


def is_number(value: object) -> bool:
    """Whether a parameter's value is a finite int or float (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ImageSource(Node):
    """Publishes the source's frames at `rate` Hz; prints each TagArray it receives.
    `exit_code` turns from None to the process's exit status when the node is done."""

    def __init__(self) -> None:
        super().__init__("tagclip_image_source")
        for warning in unknown_parameter_warnings(given_at_start(self), PARAMETERS):
            self.get_logger().warning(warning)
        self.settings = declare_settings(self)
        self.source = open_source(self.settings.source, self.get_logger().warning)
        self.frames = stream(self.source, self.settings.loop)
        self.exit_code: int | None = None
        self.sent: dict[tuple[int, int], str] = {}
        self.answered: deque[tuple[int, int]] = deque(maxlen=MAX_PENDING)
        self.first_sent = self.last_sent = 0.0  # when the last frame went out, and last again
        self.count = 0  # frames published
        self.last_msg: Image | CompressedImage | None = None  # kept for resending (paced)
        if self.settings.compressed:
            self.publisher = self.create_publisher(CompressedImage, "image/compressed", PUBLISHED)
        else:
            self.publisher = self.create_publisher(Image, "image", PUBLISHED)
        self.create_subscription(TagArray, "tags", self._on_tags, 10)
        self.create_timer(1.0 / self.settings.rate, self._tick)
        self.get_logger().info(f"publishing {self.source} on {self.publisher.topic_name} "
                               "once a subscriber appears")

    def _tick(self) -> None:
        """Publish the next frame, unless nobody listens yet or the last tags are still due."""
        if self.exit_code is not None or self.publisher.get_subscription_count() == 0:
            return
        if self._waiting_for_tags() or self._waiting_for_first_ack():
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

    def _waiting_for_first_ack(self) -> bool:
        """A single pass: true while a reliable subscriber has not acknowledged the first frame
        (for up to ACK_TIMEOUT_S), so none misses the pass's start while it is still matching."""
        if self.settings.loop or self.count != 1:
            return False
        if self.publisher.wait_for_all_acked(Duration(seconds=0)):
            return False
        return time.monotonic() - self.first_sent < ACK_TIMEOUT_S

    def _waiting_for_tags(self) -> bool:
        """With `paced`: true while the last frame's tags are due, sending that frame again
        every `resend_after` s; gives up on them after 30 s."""
        if not (self.settings.paced and self.sent):
            return False
        now = time.monotonic()
        if now - self.first_sent >= PACE_TIMEOUT_S:
            self.get_logger().warning(f"no tags within {PACE_TIMEOUT_S:.0f} s for "
                                      f"{', '.join(self.sent.values())}; going on")
            self.sent.clear()
            return False
        resend = self.settings.resend_after
        if resend and self.last_msg is not None and now - self.last_sent >= resend:
            self.publisher.publish(self.last_msg)  # same header: answered once
            self.last_sent = now
        return True

    def _publish(self, frame: Frame) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.settings.frame_id)
        self.sent[(header.stamp.sec, header.stamp.nanosec)] = frame.name
        if len(self.sent) > MAX_PENDING:
            del self.sent[next(iter(self.sent))]
        msg = (rgb_to_compressed if self.settings.compressed else rgb_to_image)(frame.rgb, header)
        self.publisher.publish(msg)
        self.count += 1
        self.first_sent = self.last_sent = time.monotonic()
        self.last_msg = msg if self.settings.paced else None

    def _finish(self) -> None:
        """End of a single pass: make sure subscribers got every frame, then exit."""
        if not self.publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
            self.get_logger().warning("not every subscriber acknowledged the last frames")
        self.get_logger().info(f"published all of {self.source}")
        self.exit_code = 0

    def _on_tags(self, msg: TagArray) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp in self.answered:  # a resent frame answered again (by a tagger that repeats)
            return
        self.answered.append(stamp)
        name = self.sent.pop(stamp, "?")
        tags = ", ".join(f"{t.label} ({t.score:.4f})" for t in msg.tags)
        print(f"{name}: {tags}", flush=True)

    def close(self) -> None:
        """Release the source (a camera) and the node."""
        self.source.close()
        self.destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run until the pass ends, the source fails, or Ctrl-C / SIGTERM (at any moment, start-up
    included: status 0, without a stack trace). Bad parameters or an unusable source: one
    sentence on stderr and exit status 2, never a stack trace."""
    # Ctrl-C and SIGTERM only set STOP and the exit deadline (set before rclpy.init, so that
    # rclpy's handler, which shuts the context down, chains to it): no KeyboardInterrupt can land
    # inside rclpy's constructors. An error rclpy raises because the context went down is that
    # stop.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = ImageSource()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while node.exit_code is None and rclpy.ok() and not STOP.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except Exception as exc:  # noqa: BLE001 - rclpy's errors once the context went down are the stop
        if STOP.is_set():
            pass
        elif node is None and isinstance(exc, (ValueError, ParameterException)):
            print(f"image_source: {exc}", file=sys.stderr)  # the parameters or the source
            return 2
        else:
            raise
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return (node.exit_code or 0) if node is not None else 0


def _stop(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: the loop ends and the node is released, within the deadline."""
    exit_within_deadline(0)
    STOP.set()


if __name__ == "__main__":
    sys.exit(main())
