"""The `tagclip_tagger` lifecycle node: camera images in; tags, label masks, overlays out.

Thin by design: it maps parameters to core settings, topics to conversions, and keeps
inference on a worker thread that only ever sees the newest frame. See
../shared/design/ros-interface.md for the contract.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool
from vision_msgs.msg import Classification, Detection2DArray, Detection3DArray, LabelInfo

from ..core import TextFeatureCache, WeightsError, default_cache_dir, load_model
from ..core.depth import DepthError
from ..core.detections import Region
from ..core.device import precision_name
from ..core.loading import weights_setting
from ..core.image import downscale_note
from ..core.pipeline import Perceived, Perception
from ..core.stamps import Wait
from ..core.tagclip import TagResult
from ..core.temporal import StableTags
from ..msg import TagArray
from . import conversions, detection_messages
from .depth_input import DepthInput, SkipWarnings
from .diagnostics import FrameStats, diagnostic_array
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
LOG_THROTTLE_S = 5.0
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
        self.stats = FrameStats()
        self.gate = FrameGate(self.param("max_rate"), self.get_logger().info)  # ~/enable, max_rate
        self.create_service(SetBool, "~/enable", self.gate.on_enable)
        self.stable: StableTags | None = None  # with temporal.enabled: the stream's stable tags
        self.perception: Perception | None = None
        self.worker: LatestFrameWorker | None = None
        self._stopping: list[LatestFrameWorker] = []  # stopped, but still finishing a frame
        self.subscription = None
        self.depth: DepthInput | None = None  # with depth.enabled, while active
        self._depth_warnings = SkipWarnings(LOG_THROTTLE_S)
        self.pubs: dict[str, Any] = {}
        self.active = False
        self._activation = 0  # counts activations: a frame's results need the same one to go out
        self._publish_lock = threading.Lock()  # publishing vs. deactivate, cleanup and exit
        self._noted_size: tuple[int, int] | None = None  # frame size last checked for downscaling
        self._last_taken: Header | None = None  # the last frame's header, to spot a resend
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
            self.stable = stable_tags(values)
        except (WeightsError, ValueError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.pubs = {
            "tags": self.create_publisher(TagArray, "tags", 10),
            "classification": self.create_publisher(Classification, "classification", 10),
            "label_mask": self.create_publisher(Image, "label_mask", 10),
            "overlay": self.create_publisher(Image, "overlay", 10),
            "detections": self.create_publisher(Detection2DArray, "detections", 10),
            "detections_3d": self.create_publisher(Detection3DArray, "detections_3d", 10),
            "label_info": self.create_publisher(LabelInfo, "label_info", LATCHED),
        }
        self.worker = LatestFrameWorker(self._process, self._on_worker_error)
        self.worker.start()
        self._publish_label_info()
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        compressed = self.param("image_transport") == "compressed"
        qos = qos_profile_sensor_data if self.param("image_qos") == "sensor_data" else RELIABLE_IMAGES
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self.subscription = self.create_subscription(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            self._on_image, qos, event_callbacks=events)
        if self.param("depth.enabled"):
            self.depth = DepthInput(self, qos, self.param("depth.max_delay"))
        with self._publish_lock:
            self.active = True
            self._activation += 1
            self._last_taken = None  # a frame dropped by the last deactivate may come again
        depth = f" with {self.depth.topics()}" if self.depth is not None else ""
        self.get_logger().info(f"active: listening on {self.subscription.topic_name}{depth}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        with self._publish_lock:  # once this returns, a frame in progress publishes nothing
            self.active = False
        if self.subscription is not None:
            self.destroy_subscription(self.subscription)
            self.subscription = None
        if self.depth is not None:
            self.depth.close()
            self.depth = None
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
            for publisher in self.pubs.values():
                self.destroy_publisher(publisher)
            self.pubs = {}
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
            self.gate.limiter.set_rate(changes["max_rate"])
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
            self.stable = stable_tags(values)  # new settings: the stream starts over
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
    def _on_image(self, msg: Image | CompressedImage) -> None:
        if not (self.active and self.worker is not None):
            return
        if conversions.is_resend(msg.header, self._last_taken):
            return  # the last frame sent again (image_source does until answered): answered once
        if not self.gate.admit():
            return  # paused, or faster than max_rate: dropped before any work, and counted
        self._last_taken = msg.header
        depth = self.depth.wait(msg.header) if self.depth is not None else None  # paired when done
        self.worker.submit((msg, time.monotonic(), self._activation, depth))

    def _process(self, frame: tuple[Image | CompressedImage, float, int, Wait | None]) -> None:
        msg, received, activation, depth = frame
        perception = self.perception
        if perception is None or not self._current(activation):
            return
        try:
            rgb = conversions.frame_to_rgb(msg)
        except conversions.FrameError as exc:
            self.stats.record_bad(str(exc))
            self.get_logger().warning(f"skipping frame: {exc}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        method = self.param("segmentation.method") if self.param("segmentation.enabled") else None
        self._note_downscale(perception, rgb.shape[:2])
        result = perception.run(rgb, method, select=self._stable_selection(msg.header, perception))
        if not self._publish_results(msg, rgb, result, activation, depth):
            return
        in_node = time.monotonic() - received
        self.stats.record(in_node, result.seconds)
        stamp = msg.header.stamp
        self.get_logger().debug(f"frame {stamp.sec}.{stamp.nanosec:09d}: core "
                                f"{1000 * result.seconds:.2f} ms, in node {1000 * in_node:.2f} ms")

    def _note_downscale(self, perception: Perception, size: tuple[int, int]) -> None:
        """Log that frames are downscaled for the model: once, and again if the size changes."""
        if size == self._noted_size:
            return
        self._noted_size = size
        settings = perception.tagger.settings
        note = downscale_note(*size, perception.tagger.loaded.patch_size, settings.max_input_side)
        if note:
            self.get_logger().info(note)

    def _stable_selection(self, header: Header, perception: Perception
                          ) -> Callable[[TagResult], TagResult] | None:
        """With temporal.enabled, what turns a frame's TagCLIP result into the stream's stable
        tags (core.temporal), before its mask and detections are made; None otherwise."""
        stable = self.stable
        if stable is None:
            return None
        factor = perception.tagger.settings.tag_threshold
        seconds = header.stamp.sec + header.stamp.nanosec * 1e-9
        return lambda result: stable.update(result, factor, seconds)

    def _current(self, activation: int) -> bool:
        """Whether the node stayed active since a frame arrived during `activation`."""
        return self.active and activation == self._activation

    def _publish_results(self, msg: Image | CompressedImage, rgb, result: Perceived,
                         activation: int, depth: Wait | None = None) -> bool:
        """Publish a frame's results, unless the node was deactivated (or cleaned up, or is
        exiting) since the frame arrived; returns whether they went out."""
        with self._publish_lock:
            if not self._current(activation):
                return False
            overlay = self.pubs["overlay"].get_subscription_count() > 0  # drawn only when watched
            if overlay:
                self.stats.record_overlay()
            found = self._regions(result) if detection_messages.watched(self.pubs) else None
            for topic, out in conversions.result_messages(result, msg.header, rgb, overlay,
                                                          found).items():
                self.pubs[topic].publish(out)
            boxes = self._detections_3d(msg.header, rgb.shape[:2], found, depth)
            if boxes is not None:
                self.pubs["detections_3d"].publish(boxes)
        return True

    def _detections_3d(self, header: Header, size: tuple[int, int], found: list[Region] | None,
                       depth: Wait | None) -> Detection3DArray | None:
        """The frame's detections_3d: with depth on, while watched, for a frame with regions.
        None when its depth cannot serve it: the frame's 3D is skipped, counted in /diagnostics
        and the reason logged (each kind at once, then throttled)."""
        source = self.depth
        if (source is None or depth is None or found is None
                or self.pubs["detections_3d"].get_subscription_count() == 0):
            return None
        try:
            boxes = source.boxes(depth, found, size, self.param("depth.min_points"))
        except DepthError as exc:
            self.stats.record_depth_skip(str(exc))
            if self._depth_warnings.due(str(exc)):
                stamp = header.stamp
                self.get_logger().warning(f"no detections_3d for the frame stamped "
                                          f"{stamp.sec}.{stamp.nanosec:09d}: {exc}")
            return None
        return detection_messages.detection_3d_array(boxes, header)

    def _regions(self, result: Perceived) -> list[Region] | None:
        """The frame's detection regions, counted in /diagnostics; None, with a throttled
        warning, when segmentation is off (regions are those of the label mask)."""
        found = detection_messages.frame_regions(result, self.param("detections.min_area"))
        if found is None:
            self.get_logger().warning("detections need segmentation.enabled: none are published",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        else:
            self.stats.record_detections()
        return found

    def _publish_label_info(self) -> None:
        with self._publish_lock:  # never into a publisher that cleanup destroyed
            if self.perception is None or "label_info" not in self.pubs:
                return
            header = Header(stamp=self.get_clock().now().to_msg())
            tagger = self.perception.tagger
            self.pubs["label_info"].publish(
                conversions.label_info(tagger.vocabulary, tagger.settings.tag_threshold, header))

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
        state = self._state()
        dropped = self.worker.dropped if self.worker else 0
        info.update(self.gate.diagnostics())
        self.diagnostics_pub.publish(diagnostic_array(
            self.get_fully_qualified_name(), self.get_clock().now().to_msg(), self.stats, dropped,
            state, info))


def stable_tags(values: dict[str, Any]) -> StableTags | None:
    """A new stream's stable tags with the `temporal.*` values; None while temporal.enabled
    is off."""
    return StableTags(temporal_from(values)) if values["temporal.enabled"] else None


def free_accelerator_memory() -> None:
    """Return cached GPU memory after the model is dropped (no-op on the CPU)."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
