"""What the node tests share: an rclpy client on a fresh DDS domain, one per test module."""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest
import rclpy
from vision_msgs.msg import LabelInfo

from tagclip_ros.core import load_vocabulary
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.node.harness import LATCHED, Client, TaggerProcess, wait_until

STARTUP_S = 240
ANSWER_S = 60
RESEND_S = 10  # a first frame unanswered this long is sent again (see answer_for)


@pytest.fixture(scope="module")
def ros():
    """An rclpy client node spun in the background, on a random domain so that test modules
    (and other runs on the machine) never hear each other; large images go over LARGE_DATA,
    as run.sh sets it."""
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(100, 200))
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    rclpy.init()
    client = Client()
    yield client
    client.close()
    rclpy.shutdown()


def started_tagger(ros: Client, namespace: str, log: str, params: dict,
                   cameras: tuple[str, ...] = ()) -> TaggerProcess:
    """A tagger process in `namespace` (serving `cameras`, if any), once it is active (its
    latched label_info arrived, each camera's); fails the test with the node's log if it exits
    instead."""
    if cameras:
        params = {**params, "cameras": f"[{', '.join(cameras)}]"}
    process = TaggerProcess(namespace, log, params)
    infos = [ros.collect(LabelInfo, f"{namespace}/{camera}/label_info".replace("//", "/"), LATCHED)
             for camera in cameras or ("",)]
    wait_until(lambda: all(infos) or process.process.poll() is not None, STARTUP_S, "tagger start")
    assert process.process.poll() is None, process.log()
    return process


@pytest.fixture(scope="module")
def voc_perception(loaded, text_cache) -> Perception:
    """The core over the VOC vocabulary: what a tagger node with default settings computes."""
    return Perception(loaded, load_vocabulary("voc"), text_cache=text_cache)


def answer_for(messages: list, stamp, timeout: float = ANSWER_S,
               resend: Callable[[], object] | None = None):
    """The first message whose header stamp equals `stamp`. With `resend`, the frame is sent
    again every RESEND_S until then: a node's first frame can go before its subscription has
    matched the camera (on a busy machine, discovery is not symmetric)."""
    sent = [time.monotonic()]

    def find():
        answer = next((m for m in list(messages) if m.header.stamp == stamp), None)
        if answer is None and resend is not None and time.monotonic() - sent[0] > RESEND_S:
            resend()
            sent[0] = time.monotonic()
        return answer
    return wait_until(find, timeout, f"answer for stamp {stamp.sec}.{stamp.nanosec}")
