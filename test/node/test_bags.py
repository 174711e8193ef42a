"""Which topics `tagclip bag` tags and where their outputs go (the verb itself: test/cli/test_bag.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tagclip_ros.node.bags import BagError, image_topics, output_namespace

RAW, JPEG = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"


@pytest.mark.parametrize("topic, namespace", [
    ("/robot/cam/image_raw", "/robot/cam"), ("/robot/cam/image_raw/compressed", "/robot/cam"),
    ("/image", ""), ("/image/compressed", ""), ("cam/image", "/cam")])
def test_outputs_go_to_the_image_topics_namespace(topic, namespace):
    assert output_namespace(topic) == namespace


def test_every_image_topic_is_tagged_unless_topics_are_named():
    found = [SimpleNamespace(topic="/a/image_raw", msgtype=RAW),
             SimpleNamespace(topic="/b/image_raw/compressed", msgtype=JPEG),
             SimpleNamespace(topic="/odom", msgtype="nav_msgs/msg/Odometry")]
    assert image_topics(found, None) == {"/a/image_raw": "/a", "/b/image_raw/compressed": "/b"}
    assert image_topics(found, ["/b/image_raw/compressed"]) == {"/b/image_raw/compressed": "/b"}


@pytest.mark.parametrize("found, requested, reason", [
    ([("/cam/image_raw", RAW), ("/cam/image_raw/compressed", JPEG)], None, "choose one with --topic"),
    ([("/cam/image_raw", RAW), ("/cam/image_rect", RAW)], None, "choose one with --topic"),
    ([("/cam/image_raw", RAW)], ["/nope"], "no such topic"),
    ([("/odom", "nav_msgs/msg/Odometry")], ["/odom"], "not images"),
    ([("/odom", "nav_msgs/msg/Odometry")], None, "no sensor_msgs/Image"),
])
def test_unusable_topic_choices_are_one_sentence(found, requested, reason):
    with pytest.raises(BagError, match=reason):
        image_topics([SimpleNamespace(topic=t, msgtype=k) for t, k in found], requested)
