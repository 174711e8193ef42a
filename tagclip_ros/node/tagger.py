"""The `tagclip_tagger` lifecycle node: camera images in; tags, label masks, overlays out.

Thin by design: it maps parameters to core settings, topics to conversions, and keeps
inference on a worker thread that only ever sees each camera's newest frame, the cameras in
turn (one model for all of them: `cameras`, node/camera_streams.py). See
../shared/design/ros-interface.md for the contract.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool

from ..core import TextFeatureCache, WeightsError, default_cache_dir, load_model
from ..core.device import precision_name
from ..core.loading import weights_setting
from ..core.image import downscale_note
from ..core.pipeline import Perceived, Perception, batching_pays
from ..core.stamps import Wait
from ..core.tags import TagResult
from ..core.temporal import StableTags
from . import conversions
from .camera_streams import CameraStream, camera_streams
from .diagnostics import FrameStats, diagnostic_array
from .frame_outputs import LOG_THROTTLE_S, FrameOutputs
from .gate import FrameGate
from .param_checks import ParameterError, given_at_start, unknown_parameter_warnings
from .params import (PARAMETERS, PROFILE_PARAMETERS, SPECS, TEMPORAL, overrides_from, profile_from,
                     rejection_reason, start_reason, temporal_from, typed)
from .query_service import TagImageService
from .worker import LatestFrameWorker

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

NODE_NAME = "tagclip_tagger"
# How long cleanup and exit wait for a frame in progress (which cannot be interrupted: ViT-B/16
# on a CPU takes seconds per frame) before abandoning it; its result would be dropped anyway.
STOP_GRACE_S = 1.0
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE_IMAGES = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)


class TaggerNode(LifecycleNode):
    """Managed node: configure loads the model, activate subscribes, deactivate unsubscribes,
    cleanup frees the model. With `autostart` it walks itself to active."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._check_start_values()
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = FrameStats()  # all cameras' frames
        self.streams = camera_streams(self.param("cameras"), LOG_THROTTLE_S, self.stats)
        self.gate = FrameGate(self.param("max_rate"), self.get_logger().info)  # ~/enable, max_rate
        self.create_service(SetBool, "~/enable", self.gate.on_enable)
        self.perception: Perception | None = None
        self.worker: LatestFrameWorker | None = None
        self._stopping: list[LatestFrameWorker] = []  # stopped, but still finishing a frame
        self.active = False
        self._activation = 0  # counts activations: a frame's results need the same one to go out
        self._publish_lock = threading.Lock()  # publishing vs. deactivate, cleanup and exit
        self.outputs = FrameOutputs(self.get_logger(), self.stats, self.param)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.param("diagnostics_period"), self._publish_diagnostics)
        self.tag_image = TagImageService(self, self._values)  # ~/tag_image, served while active
        if self.param("autostart"):
            self.trigger_configure()
            if self.perception is not None:
                self.trigger_activate()

    def param(self, name: str) -> Any:
        return typed(name, self.get_parameter(name).value)

    def _check_start_values(self) -> None:
        """Before declaring: warn about each value given at start (-p, params file) whose name
        is none of the node's parameters (rclpy would ignore it silently), and raise
        ParameterError with one sentence for a value the node cannot use (rclpy would raise
        a traceback, or the node would not tell)."""
        given = given_at_start(self)
        for warning in unknown_parameter_warnings(given, SPECS):
            self.get_logger().warning(warning)
        reason = start_reason(given)
        if reason:
            raise ParameterError(reason)

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            loaded = load_model(self.param("model.name"), self.param("model.pretrained"),
                                weights_setting(self.param("model.weights")), self.param("device"),
                                self.param("precision"), self.param("compile"))
            cache = TextFeatureCache(loaded, self.param("text_cache_dir") or default_cache_dir())
            self.get_logger().info(f"loaded {loaded.description} on {loaded.device} in "
                                   f"{precision_name(loaded.dtype)}; "
                                   "encoding the vocabulary")
            values = self._values()
            self.perception = Perception.for_profile(loaded, profile_from(values), cache,
                                                     *overrides_from(values))
        except (WeightsError, ValueError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        for stream in self.streams:
            stream.stable = stable_tags(values)
            stream.create_publishers(self, LATCHED)
        self.worker = LatestFrameWorker(lambda frame: self._process([frame]), self._on_worker_error,
                                        process_batch=self._process, batch_limit=self._batch_limit)
        self.worker.start()
        self._publish_label_info()
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        compressed = self.param("image_transport") == "compressed"
        qos = qos_profile_sensor_data if self.param("image_qos") == "sensor_data" else RELIABLE_IMAGES
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        depth = self.param("depth.max_delay") if self.param("depth.enabled") else None
        with self._publish_lock:  # a frame dropped by the last deactivate may come again
            for stream in self.streams:
                stream.subscribe(self, compressed, qos, self._on_image, events, depth)
            self.active = True
            self._activation += 1
        self.get_logger().info(f"active: listening on {', '.join(s.listening() for s in self.streams)}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        with self._publish_lock:  # once this returns, a frame in progress publishes nothing
            self.active = False
        for stream in self.streams:
            stream.unsubscribe(self)
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        if not self.release():
            self.get_logger().info("cleanup: the frame in progress is abandoned; its thread "
                                   "frees the model when that frame is done")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.on_deactivate(state)
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def release(self, timeout: float = STOP_GRACE_S) -> bool:
        """Stop processing and free the worker, the publishers and the model; nothing is
        published afterwards. Waits at most `timeout` s for a frame in progress: neither a
        transition nor an exit should wait long for a result that is dropped anyway. Returns
        whether no inference thread is left (this worker's, or one an earlier cleanup left
        finishing its frame); such a thread ends by itself once its frame is done."""
        worker, self.worker = self.worker, None
        with self._publish_lock:
            self.active = False
        if worker is not None:
            self._stopping.append(worker)
        self._stopping = [w for w in self._stopping if not w.stop(timeout)]
        with self._publish_lock:
            for stream in self.streams:
                stream.destroy_publishers(self)
            self.perception = None
        self.tag_image.release()
        free_accelerator_memory()
        return not self._stopping

    # ---- parameters ------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {spec.name: self.param(spec.name) for spec in PARAMETERS}

    def _state(self) -> str:
        """The lifecycle state, as the parameter rules and /diagnostics name it."""
        return "active" if self.active else ("inactive" if self.perception else "unconfigured")

    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        reason = rejection_reason(changes, self._values(), self._state())
        if reason:
            self.get_logger().warning(f"parameter change rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        changes = {name: typed(name, value) for name, value in changes.items()}
        if "max_rate" in changes:  # applied at once: the gate runs on this (the executor's) thread
            self.gate.set_rate(changes["max_rate"])
        if self.worker is not None:  # apply on the inference thread, before the next frame
            values = {**self._values(), **changes}  # the state this change leads to, as checked
            self.worker.call_soon(lambda: self._apply(changes, values))
        return SetParametersResult(successful=True)

    def _apply(self, changes: dict[str, Any], values: dict[str, Any]) -> None:
        """Apply accepted `changes`; `values` are all parameters right after them (later changes
        may already be set, and come as their own tasks)."""
        perception = self.perception
        if perception is None:
            return
        if any(name.startswith(TEMPORAL) for name in changes):
            for stream in self.streams:
                stream.stable = stable_tags(values)  # new settings: each stream starts over
        if not PROFILE_PARAMETERS & changes.keys():
            return
        profile = profile_from(values)
        before = perception.tagger.text_cache.encoded_names
        perception.set_profile(profile, *overrides_from(values))  # vocabulary and settings at once
        if "vocabulary" in changes or "background" in changes:
            encoded = perception.tagger.text_cache.encoded_names - before
            self.get_logger().info(f"vocabulary now has {len(profile.vocabulary.classes)} classes "
                                   f"(profile {profile.name}, {encoded} names newly encoded)")
        if self.perception is perception:  # not after cleanup, from a stale thread
            self._publish_label_info()

    # ---- frames ----------------------------------------------------------------------------
    def _on_image(self, stream: CameraStream, msg: Image | CompressedImage) -> None:
        if not (self.active and self.worker is not None):
            return
        if conversions.is_resend(msg.header, stream.last_taken):
            return  # the last frame sent again (image_source does until answered): answered once
        if not self.gate.admit(stream.name):
            return  # paused, or faster than max_rate: dropped before any work, and counted
        stream.last_taken = msg.header
        depth = stream.depth.wait(msg.header) if stream.depth is not None else None  # paired when done
        self.worker.submit(Frame(stream, msg, time.monotonic(), self._activation, depth), stream.name)

    def _batch_limit(self) -> int:
        """How many cameras' frames the worker may hand over together (`batching`)."""
        setting, perception = self.param("batching"), self.perception
        if setting == "off" or perception is None:
            return 1
        if setting == "auto" and not batching_pays(perception.tagger.loaded):
            return 1
        return len(self.streams)

    def _process(self, frames: list[Frame]) -> None:
        """Decode, run and publish frames of different cameras (one, or a batch: frames of equal
        size go through the model together)."""
        perception = self.perception
        if perception is None or not self._current(frames[0].activation):
            return
        decoded = [(frame, rgb) for frame in frames if (rgb := self._decode(frame)) is not None]
        method = self.param("segmentation.method") if self.param("segmentation.enabled") else None
        for frame, rgb in decoded:
            self._note_downscale(frame.stream, perception, rgb.shape[:2])
        selects = [self._stable_selection(frame.stream, frame.msg.header, perception) for frame, _ in decoded]
        rgbs = [rgb for _, rgb in decoded]
        if len(decoded) > 1:
            results = perception.run_batch(rgbs, method, selects=selects)
            self.stats.record_batch(len(decoded))
        else:
            results = [perception.run(rgb, method, select=select) for rgb, select in zip(rgbs, selects)]
        for (frame, rgb), result in zip(decoded, results):
            if self._publish_results(frame, rgb, result):
                self._record(frame, result)

    def _decode(self, frame: Frame) -> np.ndarray | None:
        """The frame's RGB pixels; None, counted and logged (throttled), for a bad frame."""
        try:
            return conversions.frame_to_rgb(frame.msg)
        except conversions.FrameError as exc:
            for stats in frame.stream.counted_in(self.stats):
                stats.record_bad(f"{frame.stream.label if stats is self.stats else ''}{exc}")
            self.get_logger().warning(f"{frame.stream.label}skipping frame: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return None

    def _record(self, frame: Frame, result: Perceived) -> None:
        in_node = time.monotonic() - frame.received
        for stats in frame.stream.counted_in(self.stats):
            stats.record(in_node, result.seconds)
        stamp = frame.msg.header.stamp
        self.get_logger().debug(f"{frame.stream.label}frame {stamp.sec}.{stamp.nanosec:09d}: core "
                                f"{1000 * result.seconds:.2f} ms, in node {1000 * in_node:.2f} ms")

    def _note_downscale(self, stream: CameraStream, perception: Perception, size: tuple[int, int]) -> None:
        """Log that frames are downscaled for the model: once per camera, and again if the size
        changes."""
        if size == stream.noted_size:
            return
        stream.noted_size = size
        settings = perception.tagger.settings
        note = downscale_note(*size, perception.tagger.loaded.patch_size, settings.max_input_side)
        if note:
            self.get_logger().info(stream.label + note)

    def _stable_selection(self, stream: CameraStream, header: Header, perception: Perception
                          ) -> Callable[[TagResult], TagResult] | None:
        """With temporal.enabled, what turns a frame's TagCLIP result into its stream's stable
        tags (core.temporal), before its mask and detections are made; None otherwise."""
        stable = stream.stable
        if stable is None:
            return None
        return stable.selection(perception.tagger.settings.tag_threshold,
                                conversions.stamp_seconds(header))

    def _current(self, activation: int) -> bool:
        """Whether the node stayed active since a frame arrived during `activation`."""
        return self.active and activation == self._activation

    def _publish_results(self, frame: Frame, rgb, result: Perceived) -> bool:
        """Publish a frame's results on its camera's topics, unless the node was deactivated
        (or cleaned up, or is exiting) since the frame arrived; returns whether they went out."""
        with self._publish_lock:
            if not self._current(frame.activation):
                return False
            self.outputs.publish(frame.stream, frame.msg.header, rgb, result, frame.depth)
        return True

    def _publish_label_info(self) -> None:
        with self._publish_lock:  # never into a publisher that cleanup destroyed
            if self.perception is None:
                return
            header = Header(stamp=self.get_clock().now().to_msg())
            tagger = self.perception.tagger
            info = conversions.label_info(tagger.vocabulary, tagger.settings.tag_threshold, header)
            for stream in self.streams:
                if "label_info" in stream.pubs:
                    stream.pubs["label_info"].publish(info)

    def _on_worker_error(self, exc: Exception) -> None:
        self.stats.record_bad(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=LOG_THROTTLE_S)

    def _on_incompatible_qos(self, event: Any) -> None:
        policy = getattr(event.last_policy_kind, "name", str(event.last_policy_kind))
        self.get_logger().warning(
            f"an image publisher's QoS is incompatible with this subscription ({policy}): no "
            f"images will arrive. image_qos is '{self.param('image_qos')}'; set it to match the "
            "camera (sensor_data for best-effort cameras, reliable for reliable-only ones)",
            throttle_duration_sec=LOG_THROTTLE_S)

    def _publish_diagnostics(self) -> None:
        perception = self.perception
        info = {"vocabulary_size": str(len(perception.vocabulary.classes)) if perception else "0"}
        if perception is not None:
            loaded = perception.tagger.loaded
            info.update(device=str(loaded.device), precision=precision_name(loaded.dtype),
                        model=loaded.description)
        state, worker = self._state(), self.worker
        dropped = worker.dropped if worker else 0
        info.update(self.gate.diagnostics())
        info["cameras"] = str(len(self.streams))
        cameras = {s.name: (s.stats, worker.dropped_by(s.name) if worker else 0)
                   for s in self.streams if s.name}
        self.diagnostics_pub.publish(diagnostic_array(
            self.get_fully_qualified_name(), self.get_clock().now().to_msg(), self.stats, dropped,
            state, info, cameras))


@dataclass(frozen=True)
class Frame:
    """A frame on its way to the worker: its camera, the message, when it arrived (monotonic),
    the activation it arrived in, and its depth pairing (with depth.enabled)."""

    stream: CameraStream
    msg: Image | CompressedImage
    received: float
    activation: int
    depth: Wait | None


def stable_tags(values: dict[str, Any]) -> StableTags | None:
    """A new stream's stable tags with the `temporal.*` values; None while temporal.enabled
    is off."""
    return StableTags(temporal_from(values)) if values["temporal.enabled"] else None


def free_accelerator_memory() -> None:
    """Return cached GPU memory after the model is dropped (no-op on the CPU)."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
