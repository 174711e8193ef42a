"""launch_testing test of launch/tagger.launch.py, for machines with a ROS 2 distro.

Run with `colcon test --packages-select tagclip_ros` (or `launch_test` on this file). Where
`launch_testing` is not installable (PyPI-only machines), pytest skips this module; there the
process-level tests in test/node/ start the same command line the launch file produces.
Weights: TAGCLIP_TEST_WEIGHTS, else the fixture checkpoint beside the repository, else the
default OpenAI download.
"""
import os
import time
import unittest

import pytest

launch_testing = pytest.importorskip("launch_testing")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from tagclip_ros.msg import TagArray  # noqa: E402
from vision_msgs.msg import Classification  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "reference", "clip_tiny12_seed1.pt")
WEIGHTS = os.environ.get("TAGCLIP_TEST_WEIGHTS") or (FIXTURE if os.path.isfile(FIXTURE) else "")


@pytest.mark.launch_test
def generate_test_description():
    share = get_package_share_directory("tagclip_ros")
    tagger = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "tagger.launch.py")),
        launch_arguments={"image": "/launch_test/camera", "namespace": "launch_test",
                          "device": "cpu", "weights": WEIGHTS}.items())
    return launch.LaunchDescription([tagger, launch_testing.actions.ReadyToTest()])


class TestTaggerLaunch(unittest.TestCase):
    """The launched node comes up active and answers an image with a TagArray and a
    vision_msgs/Classification."""

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("tagger_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_image_in_tags_out(self):
        received, classified = [], []
        self.node.create_subscription(TagArray, "/launch_test/tags", received.append, 10)
        self.node.create_subscription(Classification, "/launch_test/classification",
                                      classified.append, 10)
        publisher = self.node.create_publisher(Image, "/launch_test/camera", 10)
        pixels = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        frame = Image(height=240, width=320, encoding="rgb8", step=960, data=pixels.tobytes())
        deadline = time.monotonic() + 240
        while not (received and classified) and time.monotonic() < deadline:
            if publisher.get_subscription_count() > 0:
                frame.header.stamp = self.node.get_clock().now().to_msg()
                publisher.publish(frame)
            rclpy.spin_once(self.node, timeout_sec=1.0)
        self.assertTrue(received, "no TagArray from the launched tagger")
        self.assertEqual(len(received[0].scores), 20)
        self.assertTrue(classified and classified[0].results,
                        "no vision_msgs/Classification from the launched tagger")


class TestRvizArgument(unittest.TestCase):
    """`rviz` is declared (`ros2 launch tagclip_ros tagger.launch.py --show-args` lists it) and
    off by default, so that the launch above needs no rviz2."""

    def test_rviz_argument(self):
        from launch.launch_description_sources import \
            get_launch_description_from_python_launch_file
        path = os.path.join(get_package_share_directory("tagclip_ros"), "launch", "tagger.launch.py")
        description = get_launch_description_from_python_launch_file(path)
        arguments = {argument.name: argument for argument in description.get_launch_arguments()}
        self.assertIn("rviz", arguments)
        self.assertEqual([s.text for s in arguments["rviz"].default_value], ["false"])


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        # launch ends it with SIGINT (SIGTERM after 5 s); the README promises status 0 for both
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])
