"""Tagging a recorded rosbag2 offline: the node's outputs, written into a copy of the bag.

Every message of the input bag is copied unchanged (same bytes, same log time, same connection
metadata), and each frame of an image topic gets what the node would publish for it — `tags`,
`classification`, `label_mask` and `detections`, optionally `overlay` — in that topic's
namespace, with the image's header and log time; `label_info` is written once per namespace,
before its first frame. Messages are built by the node's own conversions and serialised by
rclpy, so they are the messages the node publishes; rosbags reads and writes the files
(mcap or sqlite3, no ROS distro needed) and describes the new types from the packages'
installed .msg files. With stable tags (`BagOptions.temporal`, the node's `temporal.*`), each
image topic's frames are smoothed in the bag's order, by their header stamps, as the node would.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import (Connection, Qos, QosDurability, QosHistory, QosLiveliness,
                                QosReliability, QosTime)
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.depth import DepthError
from ..core.detections import DEFAULT_MIN_AREA, Region
from ..core.pipeline import Perception
from ..core.tags import TagResult
from ..core.temporal import StableTags, TemporalSettings
from . import conversions, detection_messages
from .bag_depth import DepthLookahead, DepthTopics, depth_topics_problem

IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}
# output topic (relative to the image topic's namespace) → message type
OUTPUT_TYPES = {"label_info": "vision_msgs/msg/LabelInfo", "tags": "tagclip_ros/msg/TagArray",
                "classification": "vision_msgs/msg/Classification",
                "label_mask": "sensor_msgs/msg/Image", "overlay": "sensor_msgs/msg/Image",
                "detections": "vision_msgs/msg/Detection2DArray",
                "detections_3d": "vision_msgs/msg/Detection3DArray"}
# packages whose .msg files describe the output types that the base typestore lacks
MESSAGE_PACKAGES = ("vision_msgs", "tagclip_ros")
STORAGE = {".db3": StoragePlugin.SQLITE3, ".mcap": StoragePlugin.MCAP}
PARTIAL_SUFFIX = ".partial"


class BagError(ValueError):
    """A bag that cannot be tagged as asked; the message says why and what to do."""


@dataclass
class BagOptions:
    """What to compute per frame and which image topics to tag (None: all of them)."""

    method: str | None = "clipes"  # segmentation method, None for no label masks (nor detections)
    overlay: bool = False
    topics: list[str] | None = None
    min_area: float = DEFAULT_MIN_AREA  # detections' least region area, a fraction of the image
    depth: DepthTopics | None = None  # for detections_3d (with masks, of one colour topic)
    temporal: TemporalSettings | None = None  # stable tags over each image topic, or None


@dataclass
class BagReport:
    """What a run did: frames tagged, and each bad frame's reason."""

    frames: int = 0
    bad: list[str] = field(default_factory=list)
    no_3d: list[str] = field(default_factory=list)  # each frame without detections_3d: why


def output_namespace(topic: str) -> str:
    """The namespace that an image topic's outputs go to: `/robot/cam/image_raw` and
    `/robot/cam/image_raw/compressed` both give `/robot/cam` (`/image` gives the root, '')."""
    parts = topic.strip("/").split("/")
    if len(parts) > 1 and parts[-1] == "compressed":
        parts = parts[:-1]
    return "/" + "/".join(parts[:-1]) if len(parts) > 1 else ""


def log_time_text(log_time: int) -> str:
    """A log time in nanoseconds as seconds to the nanosecond, as `ros2 bag info` shows them."""
    return f"{log_time // 10**9}.{log_time % 10**9:09d} s"


def image_topics(connections: Iterable[Connection], requested: list[str] | None,
                 depth: str | None = None) -> dict[str, str]:
    """Image topic → output namespace: every Image/CompressedImage topic but the `depth` one,
    or the `requested` ones; BagError for a requested topic that is missing, holds no images or
    is the depth topic, and for two image topics whose outputs would share one namespace."""
    kinds = {c.topic: c.msgtype for c in connections if c.topic != depth}
    if requested:
        for topic in requested:
            if topic == depth:
                raise BagError(f"--topic {topic} is the --depth topic; name the colour topic")
            if topic not in kinds:
                raise BagError(f"--topic {topic}: the bag has no such topic")
            if kinds[topic] not in IMAGE_TYPES:
                raise BagError(f"--topic {topic}: it holds {kinds[topic]}, not images")
        chosen = list(dict.fromkeys(requested))
    else:
        chosen = sorted(t for t, kind in kinds.items() if kind in IMAGE_TYPES)
    if not chosen:
        raise BagError("the bag holds no sensor_msgs/Image or CompressedImage topic")
    namespaces: dict[str, str] = {}
    for topic in chosen:
        space = output_namespace(topic)
        if space in namespaces.values():
            other = next(t for t, s in namespaces.items() if s == space)
            raise BagError(f"image topics {other} and {topic} would both write to "
                           f"{space or '/'}/tags; choose one with --topic")
        namespaces[topic] = space
    return namespaces


def storage_of(source: str) -> StoragePlugin:
    """The storage format of a bag folder (by its data files) or of a single bag file."""
    files = [Path(source)] if os.path.isfile(source) else sorted(Path(source).iterdir())
    found = {STORAGE[f.suffix] for f in files if f.suffix in STORAGE}
    if len(found) != 1:
        raise BagError(f"{source}: cannot tell its storage format (expected .mcap or .db3 files)")
    return found.pop()


def package_typestore() -> Typestore:
    """A typestore of the standard ROS 2 types plus vision_msgs' and this package's, read from
    the installed .msg files (what a distro or scripts/build_msgs.sh installed)."""
    store = get_typestore(getattr(Stores, f"ROS2_{os.environ.get('ROS_DISTRO', '').upper()}",
                                  Stores.ROS2_KILTED))
    types: dict = {}
    for package in MESSAGE_PACKAGES:
        try:
            folder = Path(get_package_share_directory(package)) / "msg"
        except PackageNotFoundError:
            raise BagError(f"the {package} message definitions are not installed; source the "
                           "ROS 2 environment (e.g. `. scripts/ros_env.sh .venv install`)") from None
        for path in sorted(folder.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"),
                                            f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def qos(latched: bool) -> list[Qos]:
    """Offered QoS recorded with an output topic: reliable, depth 10, or transient-local
    depth 1 for latched topics (label_info), so `ros2 bag play` serves them as the node does."""
    never = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return [Qos(QosHistory.KEEP_LAST, 1 if latched else 10, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
                never, never, QosLiveliness.AUTOMATIC, never, False)]


def replace_folder(built: str, target: str, staging: str) -> None:
    """Move the finished bag `built` (inside the folder `staging`) to `target`, replacing any
    earlier output, then remove `staging`. Renames only: `target` is at every moment the old
    bag, absent (a run killed between the renames: the next run starts over) or the new bag
    whole, never a half-deleted old one."""
    if os.path.lexists(target):
        os.replace(target, built + ".replaced")  # into staging, removed with it
    os.replace(built, target)
    shutil.rmtree(staging)


class BagTagger:
    """Copies a bag and adds, for each frame of its image topics, the node's outputs."""

    def __init__(self, perception: Perception, options: BagOptions) -> None:
        self.perception = perception
        self.options = options
        self.store = package_typestore()
        self._ahead: DepthLookahead | None = None  # while a run with depth reads the bag
        self._stable: dict[str, StableTags] = {}  # output namespace → its stable tags, per run

    def run(self, source: str, target: str, on_start: Callable[[int], None],
            on_frame: Callable[[str | None], None]) -> BagReport:
        """Write the tagged copy of `source` to `target`: built in `target`.partial (its files
        named after `target`) and moved into place when complete, so no half-written bag is
        ever left under that name; a killed run's `target`.partial is discarded by the next.
        `on_start` gets the number of image messages; `on_frame` is called once per image
        message with None or, for a skipped frame, its topic, log time and reason."""
        target = os.path.normpath(target)
        staging = target + PARTIAL_SUFFIX
        shutil.rmtree(staging, ignore_errors=True)
        built = os.path.join(staging, os.path.basename(target))
        report = BagReport()
        self._stable = {}
        try:
            with ExitStack() as stack:
                reader = stack.enter_context(Reader(source))
                topics = self._topics(reader.connections)
                if self.options.depth is not None:
                    self._ahead = stack.enter_context(DepthLookahead(source, self.options.depth))
                on_start(sum(c.msgcount for c in reader.connections if c.topic in topics))
                os.makedirs(staging)
                with Writer(built, version=9, storage_plugin=storage_of(source)) as writer:
                    self._copy(reader, writer, topics, report, on_frame)
        except ReaderError as exc:
            raise BagError(f"{source}: not a readable rosbag2 ({exc})") from None
        except WriterError as exc:
            raise BagError(f"{staging}: cannot write the bag ({exc})") from None
        finally:
            self._ahead = None
        replace_folder(built, target, staging)
        return report

    def _topics(self, connections: Collection[Connection]) -> dict[str, str]:
        """The image topics to tag and their namespaces; with depth, checked to give 3D."""
        depth = self.options.depth
        topics = image_topics(connections, self.options.topics, depth.depth if depth else None)
        problem = depth_topics_problem(connections, depth, list(topics)) if depth else None
        if problem:
            raise BagError(problem)
        return topics

    def _copy(self, reader: Reader, writer: Writer, topics: dict[str, str], report: BagReport,
              on_frame: Callable[[str | None], None]) -> None:
        copies = {c.id: self._copy_connection(writer, c) for c in reader.connections}
        outputs: dict[str, dict[str, Connection]] = {}
        for connection, log_time, raw in reader.messages():
            writer.write(copies[connection.id], log_time, raw)
            if connection.topic not in topics:
                continue
            space = topics[connection.topic]
            msg = self._deserialise(raw, connection)
            if space not in outputs:
                outputs[space] = self._output_connections(writer, space)
                self._write(writer, outputs[space]["label_info"], log_time,
                            self._label_info(msg.header if msg is not None else Header()))
            problem = ("the message cannot be deserialised (truncated or corrupt)" if msg is None
                       else self._tag_frame(writer, outputs[space], msg, log_time, report,
                                            self._selection(space, msg.header)))
            if problem:
                problem = f"{connection.topic} at log time {log_time_text(log_time)}: {problem}"
                report.bad.append(problem)
            else:
                report.frames += 1
            on_frame(problem)

    @staticmethod
    def _deserialise(raw: bytes, connection: Connection) -> Image | CompressedImage | None:
        """The image message, or None for a payload rclpy cannot read."""
        try:
            return deserialize_message(raw, IMAGE_TYPES[connection.msgtype])
        except Exception:  # rclpy raises assorted errors for a truncated or garbled payload
            return None

    def _label_info(self, header: Header):
        """The label map, stamped like the namespace's first frame (unstamped if it is corrupt)."""
        tagger = self.perception.tagger
        return conversions.label_info(tagger.vocabulary, tagger.settings.tag_threshold, header)

    def _selection(self, space: str, header: Header) -> Callable[[TagResult], TagResult] | None:
        """With stable tags, what turns a frame's TagCLIP result into its namespace's stable
        tags (as the node's `_stable_selection`); None without."""
        if self.options.temporal is None:
            return None
        stable = self._stable.setdefault(space, StableTags(self.options.temporal))
        return stable.selection(self.perception.tagger.settings.tag_threshold,
                                conversions.stamp_seconds(header))

    def _tag_frame(self, writer: Writer, outputs: dict[str, Connection],
                   msg: Image | CompressedImage, log_time: int, report: BagReport,
                   select: Callable[[TagResult], TagResult] | None) -> str | None:
        """Tag one image message (its TagCLIP result through `select`, if any) and write its
        outputs; the reason instead if it is bad (a frame without detections_3d is tagged, and
        why is in `report`)."""
        try:
            rgb = conversions.frame_to_rgb(msg)
        except conversions.FrameError as exc:
            return str(exc)
        perceived = self.perception.run(rgb, self.options.method, select=select)
        found = detection_messages.frame_regions(perceived, self.options.min_area)
        for name, out in conversions.result_messages(perceived, msg.header, rgb,
                                                     self.options.overlay, found).items():
            self._write(writer, outputs[name], log_time, out)
        if self._ahead is not None and found is not None:
            self._write_3d(writer, outputs["detections_3d"], msg.header, found, rgb.shape[:2],
                           log_time, report)
        return None

    def _write_3d(self, writer: Writer, connection: Connection, header: Header,
                  found: list[Region], image_size: tuple[int, int], log_time: int,
                  report: BagReport) -> None:
        """Write the frame's detections_3d; if its depth cannot serve it, report why instead."""
        try:
            boxes = self._ahead.boxes(header, found, image_size)
        except DepthError as exc:
            report.no_3d.append(f"the frame at log time {log_time_text(log_time)}: {exc}")
            return
        self._write(writer, connection, log_time, detection_messages.detection_3d_array(boxes, header))

    def _copy_connection(self, writer: Writer, connection: Connection) -> Connection:
        """The output connection of an input topic: same type, definition, hash and QoS."""
        definition, digest = connection.msgdef.data, connection.digest
        store = None if definition and digest else self.store
        if store is not None and connection.msgtype not in store.types:
            raise BagError(f"topic {connection.topic} ({connection.msgtype}) has no message "
                           "definition in the bag, and the type is unknown here")
        return writer.add_connection(
            connection.topic, connection.msgtype, typestore=store,
            msgdef=None if store else definition, rihs01=None if store else digest,
            serialization_format=connection.ext.serialization_format,
            offered_qos_profiles=connection.ext.offered_qos_profiles)

    def _output_connections(self, writer: Writer, space: str) -> dict[str, Connection]:
        """The output topics of one namespace."""
        names = ["label_info", "tags", "classification"]
        names += ["label_mask", "detections"] if self.options.method else []
        names += ["detections_3d"] if self.options.method and self.options.depth else []
        names += ["overlay"] if self.options.overlay else []
        return {name: writer.add_connection(f"{space}/{name}", OUTPUT_TYPES[name], typestore=self.store,
                                            offered_qos_profiles=qos(name == "label_info"))
                for name in names}

    def _write(self, writer: Writer, connection: Connection, log_time: int, msg) -> None:
        """Write an rclpy message. rclpy leaves CDR padding bytes unset (whatever memory held),
        so the bytes go once through rosbags, which writes the same message with zero padding:
        a bag's bytes then depend only on its messages."""
        raw = serialize_message(msg)
        decoded = self.store.deserialize_cdr(raw, connection.msgtype)
        writer.write(connection, log_time, self.store.serialize_cdr(decoded, connection.msgtype))
