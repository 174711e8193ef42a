"""What the node tests share: an rclpy client on a fresh DDS domain, one per test module."""
from __future__ import annotations

import os
import random

import pytest
import rclpy

from tagclip_ros.node.harness import Client


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
