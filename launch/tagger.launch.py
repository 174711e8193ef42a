"""Launch the TagCLIP tagger on a camera topic.

    ros2 launch tagclip_ros tagger.launch.py image:=/camera/image_raw compressed:=true \
        params_file:=my_tagger.yaml device:=cuda namespace:=front weights:=/models/ViT-B-16.pt

The node comes up active (autostart) and publishes tags, label_mask, label_info and overlay in
its namespace. The tests start the same command line: tagger_node --ros-args -r __ns:=/NS
--params-file FILE -p device:=D -p image_transport:=T -p model.weights:=W -r image:=TOPIC
-r image/compressed:=TOPIC/compressed
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("tagclip_ros"), "config", "tagger.yaml")
    image = LaunchConfiguration("image")
    compressed = LaunchConfiguration("compressed")
    transport = PythonExpression(["'compressed' if '", compressed, "'.lower() == 'true' else 'raw'"])
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="image", description="camera image topic (raw)"),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="subscribe to <image>/compressed instead of <image>"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="parameter file (see config/tagger.yaml)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("weights", default_value="",
                              description="local checkpoint (default: download OpenAI ViT-B/16)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        Node(
            package="tagclip_ros",
            executable="tagger_node",
            name="tagclip_tagger",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"),
                        {"device": LaunchConfiguration("device"), "image_transport": transport,
                         "model.weights": LaunchConfiguration("weights")}],
            remappings=[("image", image), ("image/compressed", [image, "/compressed"])],
            output="screen",
            emulate_tty=True,
        ),
    ])
