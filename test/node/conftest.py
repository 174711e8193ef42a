"""What the node tests share: an rclpy client on a fresh DDS domain, one per test module."""
from __future__ import annotations

import os
import random

import pytest
import rclpy
from vision_msgs.msg import LabelInfo

from tagclip_ros.node.harness import LATCHED, Client, TaggerProcess, wait_until

STARTUP_S = 240


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


def started_tagger(ros: Client, namespace: str, log: str, params: dict) -> TaggerProcess:
    """A tagger process in `namespace`, once it is active (its latched label_info arrived);
    fails the test with the node's log if it exits instead."""
    process = TaggerProcess(namespace, log, params)
    info = ros.collect(LabelInfo, f"{namespace}/label_info", LATCHED)
    wait_until(lambda: info or process.process.poll() is not None, STARTUP_S, "tagger start")
    assert process.process.poll() is None, process.log()
    return process
