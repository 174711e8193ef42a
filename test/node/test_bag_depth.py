"""Which topics `tagclip bag --depth D --camera-info C` pairs, and what it refuses (the verb
itself: test/cli/test_bag_depth.py)."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from tagclip_ros.node.bag_depth import DepthTopics, depth_topics_problem
from tagclip_ros.node.bags import BagError, image_topics

RAW, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
DEPTH = DepthTopics("/cam/depth/image_raw", "/cam/color/camera_info")
BAG = [("/cam/color/image_raw", RAW), ("/cam/depth/image_raw", RAW), ("/cam/color/camera_info", INFO)]


def connections(found):
    return [SimpleNamespace(topic=t, msgtype=k) for t, k in found]


def test_the_depth_topic_is_not_tagged_as_a_colour_image():
    found = connections(BAG)
    topics = image_topics(found, None, DEPTH.depth)
    assert topics == {"/cam/color/image_raw": "/cam/color"}
    assert depth_topics_problem(found, DEPTH, list(topics)) is None
    with pytest.raises(BagError, match="--topic /cam/depth/image_raw is the --depth topic"):
        image_topics(found, ["/cam/depth/image_raw"], DEPTH.depth)


@pytest.mark.parametrize("found, colour, words", [
    (BAG[:1] + BAG[2:], ["/cam/color/image_raw"], "--depth /cam/depth/image_raw: the bag has no such topic"),
    (BAG[:2], ["/cam/color/image_raw"], "--camera-info /cam/color/camera_info: the bag has no such"),
    (BAG[:2] + [("/cam/color/camera_info", RAW)], ["/cam/color/image_raw"],
     "--camera-info /cam/color/camera_info: it holds sensor_msgs/msg/Image, not sensor_msgs/msg/CameraInfo"),
    (BAG, ["/a/image", "/b/image"], "registered to one colour topic, and 2 would be tagged "
     r"\(/a/image, /b/image\); choose it with --topic"),
], ids=["no depth", "no camera_info", "camera_info not CameraInfo", "two colour topics"])
def test_topics_that_cannot_give_3d_are_one_sentence(found, colour, words):
    assert re.search(words, depth_topics_problem(connections(found), DEPTH, colour) or "")
