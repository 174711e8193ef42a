"""The tagger node as a real process over DDS: stamps, scores, runtime vocabulary, compressed
input, bad frames, back-pressure and lifecycle."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool
from vision_msgs.msg import Classification, LabelInfo

from tagclip_ros.core import TextFeatureCache, load_model, load_vocabulary, read_image
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.core.dataset_profiles import PROFILES
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.diagnostics import RATE_WINDOW_S

from tagclip_ros.node.harness import LATCHED, Camera, Client, TaggerProcess, wait_until

from ..conftest import IMAGES, WEIGHTS, code_running_checkpoint
from .conftest import RESEND_S, answer_for

STARTUP_S = 240
ANSWER_S = 60


def start(ros, tmp_path_factory, text_cache_dir, namespace: str, **params) -> tuple:
    log = str(tmp_path_factory.mktemp("logs") / f"{namespace.strip('/')}.log")
    defaults = {"model.weights": WEIGHTS, "device": "cpu", "text_cache_dir": text_cache_dir,
                "diagnostics_period": 0.5}
    process = TaggerProcess(namespace, log, {**defaults, **params})
    info = ros.collect(LabelInfo, f"{namespace}/label_info", LATCHED)
    return process, info


@pytest.fixture(scope="module")
def raw_tagger(ros, tmp_path_factory, text_cache_dir):
    process, info = start(ros, tmp_path_factory, text_cache_dir, "/raw")
    wait_until(lambda: info or process.process.poll() is not None, STARTUP_S, "raw tagger start")
    assert process.process.poll() is None, process.log()
    yield process, info
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


@pytest.fixture(scope="module")
def jpeg_tagger(ros, tmp_path_factory, text_cache_dir):
    process, info = start(ros, tmp_path_factory, text_cache_dir, "/jpeg",
                          image_transport="compressed", image_qos="reliable")
    wait_until(lambda: info or process.process.poll() is not None, STARTUP_S, "jpeg tagger start")
    assert process.process.poll() is None, process.log()
    yield process, info
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def core_perception(loaded, text_cache):
    return Perception(loaded, load_vocabulary("voc"), text_cache=text_cache)


def chelsea() -> np.ndarray:
    return read_image(os.path.join(IMAGES, "chelsea.jpg"))


def test_tags_and_mask_for_a_stamped_image(ros, raw_tagger, core_perception):
    process, info = raw_tagger
    tags = ros.collect(TagArray, "/raw/tags")
    masks = ros.collect(Image, "/raw/label_mask")
    rgb = chelsea()
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(rgb, Header())
    stamp = camera.send(frame, 1234, 5678)
    answer = answer_for(tags, stamp, resend=lambda: camera.send(frame, 1234, 5678))
    perceived = core_perception.run(rgb, "clipes")
    expected = perceived.tags
    assert answer.header.frame_id == "camera_optical"
    np.testing.assert_allclose(answer.scores, expected.scores, rtol=0, atol=1e-5)
    assert [(t.class_id, t.label) for t in answer.tags] == [(t.class_id, t.label) for t in expected.tags]
    mask = answer_for(masks, stamp)
    assert (mask.height, mask.width, mask.encoding) == (rgb.shape[0], rgb.shape[1], "mono8")
    ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(rgb.shape[:2])
    assert set(np.unique(ids).tolist()) <= {0} | {t.class_id for t in answer.tags}
    # the core's mask (float16 argmax rule); another process may round a few CAM values apart
    assert np.mean(ids == perceived.segmentation.mask) >= 0.999


def test_vision_msgs_classification_and_label_info(ros, raw_tagger):
    """Subscribers that know only vision_msgs get the tags and the label map."""
    process, info = raw_tagger
    tags = ros.collect(TagArray, "/raw/tags")
    classifications = ros.collect(Classification, "/raw/classification")
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(chelsea(), Header())
    stamp = camera.send(frame, 1500, 42)
    classification = answer_for(classifications, stamp, resend=lambda: camera.send(frame, 1500, 42))
    tag_array = answer_for(tags, stamp)
    assert classification.header == tag_array.header == Header(stamp=stamp, frame_id="camera_optical")
    assert classification.results  # at least the top class
    assert [(h.class_id, np.float32(h.score)) for h in classification.results] == \
        [(t.label, np.float32(t.score)) for t in tag_array.tags]
    scores = [h.score for h in classification.results]
    assert scores == sorted(scores, reverse=True)
    latest = info[-1]
    assert isinstance(latest, LabelInfo) and latest.threshold == 0.5
    names = [(c.class_id, c.class_name) for c in latest.class_map]
    assert names == [(0, "background")] + [(i + 1, n) for i, n in enumerate(load_vocabulary("voc").classes)]


def set_vocabulary(ros: Client, namespace: str, names: list[str]):
    request = SetParameters.Request(parameters=[
        Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names).to_parameter_msg()])
    return ros.call(SetParameters, f"{namespace}/tagclip_tagger/set_parameters", request).results[0]


def test_runtime_vocabulary_change_and_rejections(ros, raw_tagger):
    process, info = raw_tagger
    tags = ros.collect(TagArray, "/raw/tags")
    camera = Camera(ros, "/raw/camera")
    frame = rgb_to_image(chelsea(), Header())
    try:
        assert set_vocabulary(ros, "/raw", ["cat", "dog", "robot"]).successful
        answer = answer_for(tags, camera.send(frame, 2000), resend=lambda: camera.send(frame, 2000))
        assert len(answer.scores) == 3 and {t.label for t in answer.tags} <= {"cat", "dog", "robot"}
        wait_until(lambda: len(info[-1].class_map) == 4, 10, "label_info re-sent")
        for names, reason in (([], "empty"), (["cat", "cat"], "more than once"),
                              (["cat", ""], "blank"),
                              (["vco"], "vocabulary 'vco' is not a dataset profile (voc, coco, "
                                        "cocostuff); to tag the single class 'vco', write '=vco'")):
            result = set_vocabulary(ros, "/raw", names)
            assert not result.successful and reason in result.reason
        answer = answer_for(tags, camera.send(frame, 2001), resend=lambda: camera.send(frame, 2001))
        assert len(answer.scores) == 3  # the old vocabulary keeps working
    finally:
        assert set_vocabulary(ros, "/raw", list(load_vocabulary("voc").classes)).successful


def test_runtime_threshold_change(ros, raw_tagger):
    process, info = raw_tagger
    tags = ros.collect(TagArray, "/raw/tags")
    camera = Camera(ros, "/raw/camera")
    request = SetParameters.Request(parameters=[Parameter("tag_threshold", value=0.0).to_parameter_msg()])
    try:
        assert ros.call(SetParameters, "/raw/tagclip_tagger/set_parameters", request).results[0].successful
        frame = rgb_to_image(chelsea(), Header())
        answer = answer_for(tags, camera.send(frame, 2500), resend=lambda: camera.send(frame, 2500))
        assert len(answer.tags) == len(answer.scores) - 1  # every class above the minimum
        wait_until(lambda: info[-1].threshold == 0.0, 10, "label_info with the new threshold")
    finally:
        request.parameters[0].value.double_value = -1.0  # the default: the profile's
        assert ros.call(SetParameters, "/raw/tagclip_tagger/set_parameters", request).results[0].successful


def set_parameter(ros: Client, namespace: str, name: str, value):
    """What `ros2 param set NODE NAME VALUE` sends (`[]`: an empty byte array, as rclpy types it)."""
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return ros.call(SetParameters, f"{namespace}/tagclip_tagger/set_parameters", request).results[0]


@pytest.mark.parametrize("name, value, reason", [
    ("device", "cpu", "device is read at configure time and the node is active: deactivate and clean up"),
    ("max_input_side", 640, "max_input_side is read at configure time"),
    ("image_qos", "reliable", "image_qos is read at activate time and the node is active: deactivate first"),
    ("autostart", False, "autostart is read at start only"),
    ("vocabulary", "cat", "vocabulary must be a list of names, e.g. [cat, dog], not the text 'cat'"),
    ("vocabulary", [], "vocabulary is empty"),
    ("max_input_side", "big", "max_input_side must be a whole number, not the text 'big'"),
], ids=["device", "max_input_side", "image_qos", "autostart", "vocabulary text", "vocabulary []",
        "max_input_side text"])
def test_a_change_the_node_cannot_use_is_refused_with_a_sentence(ros, raw_tagger, name, value, reason):
    """A value read at configure, activate or start time is refused while in use (not accepted
    and left unused); a wrong type gets a sentence, not rclpy's type numbers."""
    result = set_parameter(ros, "/raw", name, value)
    assert not result.successful and result.reason.startswith(reason), result.reason


def test_diagnostics_rate_falls_to_zero_once_frames_stop(ros, raw_tagger):
    """The rate counts the frames of the last RATE_WINDOW_S: it once kept the last frames' rate
    for as long as the node ran."""
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    tags = ros.collect(TagArray, "/raw/tags")
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(chelsea(), Header())
    for sec in (3400, 3401):  # two frames: enough for a rate over their span too
        answer_for(tags, camera.send(frame, sec), resend=lambda sec=sec: camera.send(frame, sec))

    def rate() -> float:
        values = diagnostics_values(diagnostics, "/raw")
        return float(values["rate_hz"]) if values else -1.0
    wait_until(lambda: rate() > 0, 30, "a rate above 0 after two frames")
    wait_until(lambda: rate() == 0, RATE_WINDOW_S + ANSWER_S, "the rate at 0 once frames stopped")


def test_compressed_input_matches_raw_input_of_the_decoded_image(ros, raw_tagger, jpeg_tagger):
    raw_tags = ros.collect(TagArray, "/raw/tags")
    jpeg_tags = ros.collect(TagArray, "/jpeg/tags")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(chelsea(), cv2.COLOR_RGB2BGR))
    decoded = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    jpeg_camera, jpeg_frame = (Camera(ros, "/jpeg/camera/compressed", CompressedImage),
                               CompressedImage(format="jpeg", data=jpeg.tobytes()))
    raw_camera, raw_frame = Camera(ros, "/raw/camera"), rgb_to_image(decoded, Header())
    # sent again while unanswered: on a loaded machine a best-effort frame can be lost
    from_jpeg = answer_for(jpeg_tags, jpeg_camera.send(jpeg_frame, 3000),
                           resend=lambda: jpeg_camera.send(jpeg_frame, 3000))
    from_raw = answer_for(raw_tags, raw_camera.send(raw_frame, 3000),
                          resend=lambda: raw_camera.send(raw_frame, 3000))
    np.testing.assert_allclose(from_jpeg.scores, from_raw.scores, rtol=0, atol=1e-6)
    assert [t.label for t in from_jpeg.tags] == [t.label for t in from_raw.tags]


def diagnostics_value(messages: list, namespace: str, key: str) -> int:
    for msg in reversed(list(messages)):
        for status in msg.status:
            if status.name.startswith(f"{namespace}/"):
                return int(next(v.value for v in status.values if v.key == key))
    return -1


def diagnostics_values(messages: list, namespace: str) -> dict[str, str] | None:
    """The key/values of the newest /diagnostics status of the node in `namespace`."""
    for msg in reversed(list(messages)):
        for status in msg.status:
            if status.name.startswith(f"{namespace}/"):
                return {v.key: v.value for v in status.values}
    return None


def test_a_frame_sent_again_with_the_same_header_is_answered_once(ros, raw_tagger):
    """image_source sends an unanswered frame again (a best-effort subscription may not have
    matched it yet); the node answers each header once, so a resend costs no second frame."""
    tags = ros.collect(TagArray, "/raw/tags")
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(chelsea(), Header())
    first = answer_for(tags, camera.send(frame, 3070), resend=lambda: camera.send(frame, 3070))
    camera.send(frame, 3070)  # again, after its answer: a resend
    answer_for(tags, camera.send(frame, 3071), resend=lambda: camera.send(frame, 3071))
    assert [m.header.stamp.sec for m in tags if m.header.stamp.sec == 3070] == [3070], first

    def unstamped_answers() -> int:
        return len([m for m in list(tags) if m.header.stamp.sec == 0])
    for count in (1, 2):  # an unset stamp is never taken for a resend: each is answered
        camera.send(frame, 0)
        wait_until(lambda: unstamped_answers() >= count, ANSWER_S, f"unstamped frame {count} answered")


def test_diagnostics_name_device_precision_model_latency_and_vocabulary(ros, raw_tagger):
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    tags = ros.collect(TagArray, "/raw/tags")
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(chelsea(), Header())
    answer_for(tags, camera.send(frame, 3050), resend=lambda: camera.send(frame, 3050))

    def after_a_frame() -> dict | None:
        values = diagnostics_values(diagnostics, "/raw")
        return values if values and float(values["latency_ms"]) > 0 else None
    values = wait_until(after_a_frame, 30, "/diagnostics after a frame")
    assert (values["device"], values["precision"], values["vocabulary_size"]) == ("cpu", "fp32", "20")
    assert values["model"] == f"ViT (patch 16, width 64, 12 blocks, 1 head, 224 px, QuickGELU) from {WEIGHTS}"
    assert float(values["core_ms"]) > 0 and int(values["frames_processed"]) >= 1
    assert values["state"] == "active"


def test_overlay_is_published_and_drawn_only_while_subscribed(ros, raw_tagger):
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    tags = ros.collect(TagArray, "/raw/tags")
    rgb = chelsea()
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(rgb, Header())

    def settled(sec: int) -> dict:
        """/diagnostics once it counts a frame sent now (processed, after its tags)."""
        processed = int(wait_until(lambda: diagnostics_values(diagnostics, "/raw"), 30, "diagnostics")
                        ["frames_processed"])
        answer_for(tags, camera.send(frame, sec), resend=lambda: camera.send(frame, sec))
        return wait_until(lambda: (v := diagnostics_values(diagnostics, "/raw"))
                          and int(v["frames_processed"]) > processed and v, 30, "frame counted")

    before = int(settled(3100)["overlays_drawn"])
    unwatched = settled(3101)
    assert int(unwatched["overlays_drawn"]) == before  # nobody watches: nothing drawn
    overlays = ros.collect(Image, "/raw/overlay")
    # A new frame every RESEND_S until the node's overlay publisher has matched this subscription
    # (the node answers a frame once: the same stamp again would be a resend).
    sent = [camera.send(frame, 3102).sec, time.monotonic()]

    def first_overlay() -> Image | None:
        if not overlays and time.monotonic() - sent[1] > RESEND_S:
            sent[:] = [camera.send(frame, sent[0] + 1).sec, time.monotonic()]
        return overlays[0] if overlays else None
    overlay = wait_until(first_overlay, ANSWER_S, "an overlay")
    assert (overlay.height, overlay.width, overlay.encoding) == (*rgb.shape[:2], "rgb8")
    drawn = np.frombuffer(bytes(overlay.data), np.uint8).reshape(rgb.shape)
    assert np.mean(np.any(drawn != rgb, axis=2)) > 0.2  # the mask's tint and the tags' legend
    wait_until(lambda: int(diagnostics_values(diagnostics, "/raw")["overlays_drawn"]) > before, 30,
               "the overlay counted in /diagnostics")


def counted(diagnostics: list, namespace: str, bad: int, send: Callable[[], object]) -> None:
    """Send a bad frame until /diagnostics counts `bad` bad frames for the node."""
    send()
    sent = time.monotonic()

    def done() -> bool:
        nonlocal sent
        if diagnostics_value(diagnostics, namespace, "frames_bad") >= bad:
            return True
        if time.monotonic() - sent > RESEND_S:
            send()
            sent = time.monotonic()
        return False
    wait_until(done, ANSWER_S, f"bad frame {bad} counted in {namespace} /diagnostics")


def test_bad_frames_are_skipped_and_logged(ros, raw_tagger, jpeg_tagger):
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    raw_tags, jpeg_tags = ros.collect(TagArray, "/raw/tags"), ros.collect(TagArray, "/jpeg/tags")
    raw, jpeg = Camera(ros, "/raw/camera"), Camera(ros, "/jpeg/camera/compressed", CompressedImage)
    good = rgb_to_image(chelsea(), Header())
    bad_frames = [
        Image(height=300, width=451, encoding="rgb8", step=100, data=bytes(300 * 100)),
        Image(height=4, width=4, encoding="fancy16", step=32, data=bytes(128)),
        Image(height=0, width=0, encoding="rgb8", step=0, data=b""),
        Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(12)),
    ]
    corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0 corrupt")
    for ns in ("/raw", "/jpeg"):
        wait_until(lambda ns=ns: diagnostics_value(diagnostics, ns, "frames_bad") >= 0, 30,
                   f"{ns} diagnostics")
    base = {ns: diagnostics_value(diagnostics, ns, "frames_bad") for ns in ("/raw", "/jpeg")}
    # each bad frame is sent once the one before it is counted (a newest-frame worker would
    # otherwise drop one in favour of the next), again if it is not counted within RESEND_S
    for i, frame in enumerate(bad_frames):
        counted(diagnostics, "/raw", base["/raw"] + i + 1, lambda: raw.send(frame, 4000 + i))
    counted(diagnostics, "/jpeg", base["/jpeg"] + 1, lambda: jpeg.send(corrupt, 4100))
    assert answer_for(raw_tags, raw.send(good, 4200), resend=lambda: raw.send(good, 4200))
    ok, encoded = cv2.imencode(".jpg", chelsea())
    intact = CompressedImage(format="jpeg", data=encoded.tobytes())
    assert answer_for(jpeg_tags, jpeg.send(intact, 4201), resend=lambda: jpeg.send(intact, 4201))
    assert "skipping frame" in raw_tagger[0].log() and "skipping frame" in jpeg_tagger[0].log()
    assert "Traceback" not in raw_tagger[0].log() + jpeg_tagger[0].log()


def test_incompatible_qos_is_reported(ros, jpeg_tagger):
    ros.node.create_publisher(CompressedImage, "/jpeg/camera/compressed", qos_profile_sensor_data)
    wait_until(lambda: "QoS is incompatible" in jpeg_tagger[0].log(), 20, "QoS warning in the log")


def test_latency_stays_bounded_at_30_hz(ros, raw_tagger):
    tags = ros.collect(TagArray, "/raw/tags")
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    camera = Camera(ros, "/raw/camera")
    frame = rgb_to_image(chelsea(), Header())
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    ros.node.create_subscription(TagArray, "/raw/tags",
                                 lambda m: arrived.setdefault(m.header.stamp.sec, time.monotonic()), 10)
    dropped_before = max(diagnostics_value(diagnostics, "/raw", "frames_dropped"), 0)
    for i in range(90):
        sent[5000 + i] = time.monotonic()
        camera.send(frame, 5000 + i)
        time.sleep(1 / 30)
    wait_until(lambda: 5089 in arrived or time.monotonic() - max(sent.values()) > 20, 30, "last frame")
    latencies = [arrived[s] - sent[s] for s in sorted(arrived) if s in sent]
    assert 2 <= len(latencies) < 90  # inference is slower than 30 Hz: frames were dropped
    times = sorted(arrived[s] for s in arrived if s in sent)
    period = (times[-1] - times[0]) / (len(times) - 1)
    # Each answered frame waited at most for the frame in progress plus its own inference.
    assert max(latencies) <= 2.5 * period + 0.5, (latencies, period)
    wait_until(lambda: diagnostics_value(diagnostics, "/raw", "frames_dropped") - dropped_before
               >= 90 - len(latencies) - 2, 10, "dropped frames reported")


def call_enable(ros: Client, namespace: str, on: bool) -> SetBool.Response:
    """What `ros2 service call NS/tagclip_tagger/enable std_srvs/srv/SetBool "{data: ON}"` sends."""
    return ros.call(SetBool, f"{namespace}/tagclip_tagger/enable", SetBool.Request(data=on))


def answered_and_counted(diagnostics: list, tags: list, camera: Camera, frame: Image, sec: int) -> dict:
    """Send a frame to /raw until answered; the node's /diagnostics values once they count it."""
    processed = int(wait_until(lambda: diagnostics_values(diagnostics, "/raw"), 30, "diagnostics")
                    ["frames_processed"])
    answer_for(tags, camera.send(frame, sec), resend=lambda: camera.send(frame, sec))
    return wait_until(lambda: (v := diagnostics_values(diagnostics, "/raw"))
                      and int(v["frames_processed"]) > processed and v, 30, f"frame {sec} counted")


def held_back(diagnostics: list, camera: Camera, frame: Image, sec: int, counter: str) -> dict:
    """Send a frame to /raw (again every RESEND_S) until /diagnostics `counter` counts it; the
    values then."""
    base = int(wait_until(lambda: diagnostics_values(diagnostics, "/raw"), 30, "diagnostics")[counter])
    sent = [0.0]

    def counted() -> dict | None:
        values = diagnostics_values(diagnostics, "/raw")
        if int(values[counter]) > base:
            return values
        if time.monotonic() - sent[0] > RESEND_S:
            camera.send(frame, sec)
            sent[0] = time.monotonic()
        return None
    return wait_until(counted, ANSWER_S, f"frame {sec} counted in {counter}")


def test_enable_false_pauses_the_node_and_true_resumes_it(ros, raw_tagger):
    """~/enable false: arriving frames are dropped before any work (counted, none processed),
    label_info stays latched, /diagnostics say paused; true: frames are answered again."""
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    tags = ros.collect(TagArray, "/raw/tags")
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(chelsea(), Header())
    before = answered_and_counted(diagnostics, tags, camera, frame, 9000)
    try:
        response = call_enable(ros, "/raw", False)
        assert response.success and response.message.startswith("paused"), response.message
        wait_until(lambda: diagnostics_values(diagnostics, "/raw")["paused"] == "true", 30,
                   "paused in /diagnostics")
        paused = held_back(diagnostics, camera, frame, 9001, "frames_paused")
        assert (paused["state"], paused["frames_processed"]) == ("active", before["frames_processed"])
        latched = ros.collect(LabelInfo, "/raw/label_info", LATCHED)
        wait_until(lambda: latched, 30, "label_info, latched, while paused")
    finally:
        assert call_enable(ros, "/raw", True).success
    assert answered_and_counted(diagnostics, tags, camera, frame, 9002)["paused"] == "false"
    assert not [m for m in tags if m.header.stamp.sec == 9001]


def test_max_rate_drops_the_frames_beyond_it_before_any_work(ros, raw_tagger):
    """max_rate 0.001 Hz: the first frame after the change is processed, the next ones (well
    within its period) are counted as rate-limited, apart from the newest-frame drops, and never
    answered; 0 lifts the limit."""
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    tags = ros.collect(TagArray, "/raw/tags")
    camera, frame = Camera(ros, "/raw/camera"), rgb_to_image(chelsea(), Header())
    try:
        assert set_parameter(ros, "/raw", "max_rate", 0.001).successful
        first = answered_and_counted(diagnostics, tags, camera, frame, 9100)
        for sec in range(9101, 9105):
            last = held_back(diagnostics, camera, frame, sec, "frames_rate_limited")
        assert int(last["frames_rate_limited"]) >= int(first["frames_rate_limited"]) + 4
        assert (last["frames_processed"], last["frames_dropped"]) == \
            (first["frames_processed"], first["frames_dropped"])
    finally:
        assert set_parameter(ros, "/raw", "max_rate", 0.0).successful
    answered_and_counted(diagnostics, tags, camera, frame, 9105)
    assert not [m for m in tags if 9101 <= m.header.stamp.sec <= 9104]


def lifecycle(ros: Client, namespace: str, transition: int | None = None) -> str:
    base = f"{namespace}/tagclip_tagger"
    if transition is not None:
        assert ros.call(ChangeState, f"{base}/change_state",
                        ChangeState.Request(transition=Transition(id=transition))).success
    return ros.call(GetState, f"{base}/get_state", GetState.Request()).current_state.label


def test_lifecycle_transitions(ros, tmp_path_factory, text_cache_dir):
    process, info = start(ros, tmp_path_factory, text_cache_dir, "/managed", autostart=False,
                          **{"segmentation.enabled": False})
    try:
        tags = ros.collect(TagArray, "/managed/tags")
        wait_until(lambda: lifecycle(ros, "/managed") == "unconfigured", STARTUP_S, "node up")
        assert set_parameter(ros, "/managed", "max_input_side", 640).successful  # for the configure
        assert lifecycle(ros, "/managed", Transition.TRANSITION_CONFIGURE) == "inactive"
        refused = set_parameter(ros, "/managed", "max_input_side", 1280)
        assert not refused.successful and "the node is inactive: clean up first" in refused.reason
        wait_until(lambda: info, 10, "label_info after configure")
        frame = rgb_to_image(chelsea(), Header())
        publisher = ros.node.create_publisher(Image, "/managed/camera", 10)
        assert lifecycle(ros, "/managed", Transition.TRANSITION_ACTIVATE) == "active"
        wait_until(lambda: publisher.get_subscription_count() > 0, 30, "subscription when active")
        frame.header.stamp = Time(sec=6000)
        publisher.publish(frame)
        answer_for(tags, Time(sec=6000))
        assert not set_parameter(ros, "/managed", "image_qos", "reliable").successful  # while active
        assert lifecycle(ros, "/managed", Transition.TRANSITION_DEACTIVATE) == "inactive"
        assert set_parameter(ros, "/managed", "image_qos", "sensor_data").successful
        wait_until(lambda: publisher.get_subscription_count() == 0, 30, "no subscription when inactive")
        assert lifecycle(ros, "/managed", Transition.TRANSITION_CLEANUP) == "unconfigured"
        assert lifecycle(ros, "/managed", Transition.TRANSITION_CONFIGURE) == "inactive"
    finally:
        assert process.stop() == 0, process.log()


def test_bf16_node_with_a_small_max_input_side_answers_as_the_core_does(
        ros, tmp_path_factory, text_cache_dir):
    """precision:=bf16 and max_input_side:=256 reach the core: the node's tags and mask equal
    an in-process Perception with the same settings on the same frame."""
    process, _ = start(ros, tmp_path_factory, text_cache_dir, "/bf16", precision="bf16",
                       max_input_side=256, image_qos="reliable")
    try:
        tags, masks = ros.collect(TagArray, "/bf16/tags"), ros.collect(Image, "/bf16/label_mask")
        rgb = read_image(os.path.join(IMAGES, "night_1280x720.jpg"))  # downscaled to 256x144
        camera, frame = Camera(ros, "/bf16/camera"), rgb_to_image(rgb, Header())
        answer = answer_for(tags, camera.send(frame, 8000), STARTUP_S, lambda: camera.send(frame, 8000))
        loaded = load_model(weights=WEIGHTS, device="cpu", precision="bf16")
        expected = Perception.for_profile(loaded, PROFILES["voc"], TextFeatureCache(loaded, text_cache_dir),
                                          {"max_input_side": 256}).run(rgb, "clipes")
        np.testing.assert_allclose(answer.scores, expected.tags.scores, rtol=0, atol=1e-5)
        assert [t.class_id for t in answer.tags] == [t.class_id for t in expected.tags.tags]
        mask = answer_for(masks, answer.header.stamp)
        assert (mask.height, mask.width) == rgb.shape[:2]  # the frame's size, not the model's
        ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(rgb.shape[:2])
        assert np.mean(ids == expected.segmentation.mask) >= 0.999
        assert "downscaled to 256x144" in process.log()
    finally:
        assert process.stop() == 0, process.log()


def test_a_checkpoint_whose_pickle_runs_code_fails_configure_unrun(ros, tmp_path_factory, text_cache_dir):
    path, marker = code_running_checkpoint(str(tmp_path_factory.mktemp("evil")))
    process, _ = start(ros, tmp_path_factory, text_cache_dir, "/evil", **{"model.weights": path})
    try:
        wait_until(lambda: "configure failed" in process.log(), STARTUP_S, "configure error")
        assert "could not be read as a torch checkpoint" in process.log()
        assert "Traceback" not in process.log() and not os.path.exists(marker)
    finally:
        process.stop()


def test_missing_weights_fail_configure_with_one_sentence(ros, tmp_path_factory, text_cache_dir):
    process, _ = start(ros, tmp_path_factory, text_cache_dir, "/broken",
                       **{"model.weights": "/nonexistent/ViT-B-16.pt"})
    try:
        wait_until(lambda: "configure failed" in process.log(), STARTUP_S, "configure error")
        assert "model.weights" in process.log() and "Traceback" not in process.log()
        assert lifecycle(ros, "/broken") == "unconfigured" and process.process.poll() is None
    finally:
        process.stop()
