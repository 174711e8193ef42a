"""Launch the TagCLIP tagger on a camera topic.

    ros2 launch tagclip_ros tagger.launch.py image:=/camera/image_raw compressed:=true \
        params_file:=my_tagger.yaml device:=cuda precision:=fp16 namespace:=front \
        weights:=/models/ViT-B-16.pt rviz:=true
    ros2 launch tagclip_ros tagger.launch.py image:=/camera/color/image_raw depth_enabled:=true \
        depth:=/camera/aligned_depth_to_color/image_raw camera_info:=/camera/color/camera_info
    ros2 launch tagclip_ros tagger.launch.py cameras:="[front, left, right]"

The node comes up active (autostart) and publishes tags, classification, label_mask, label_info
and overlay in its namespace (and, with depth_enabled:=true, detections_3d from `depth` and
`camera_info`). With `cameras`, one node serves each camera under its name: `front/image` in,
`front/tags`, ... out (the `image`, `depth` and `camera_info` arguments are then unused; remap
each camera's topics in your own launch file, as the README shows). `rviz:=true` also starts
rviz2 (it must be installed) with config/tagger.rviz, in the same namespace, so that the
config's relative topics `overlay` and `label_mask` are the node's (with `cameras`, set its
displays to `front/overlay`, ...). The tests start the same command line: tagger_node --ros-args
-r __ns:=/NS --params-file FILE -p device:=D -p image_transport:=T -p model.weights:=W
-r image:=TOPIC -r image/compressed:=TOPIC/compressed (and -p depth.enabled:=true -r depth:=D
-r camera_info:=C, -p cameras:=[A, B])
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("tagclip_ros")
    default_params = os.path.join(share, "config", "tagger.yaml")
    namespace = LaunchConfiguration("namespace")
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
        DeclareLaunchArgument("precision", default_value="fp32",
                              description="fp32; bf16 (CPU or CUDA); fp16 (CUDA)"),
        DeclareLaunchArgument("weights", default_value="",
                              description="local checkpoint (default: download OpenAI ViT-B/16)"),
        DeclareLaunchArgument("depth_enabled", default_value="false",
                              description="also subscribe depth and camera_info; publish detections_3d"),
        DeclareLaunchArgument("depth", default_value="depth",
                              description="depth image topic registered to the image (16UC1 mm, 32FC1 m)"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="the colour camera's CameraInfo topic"),
        DeclareLaunchArgument("cameras", default_value="[]",
                              description="cameras served by the one node, e.g. [front, left]: topics "
                                          "front/image → front/tags, ...; []: one camera on `image`"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 with config/tagger.rviz"),
        Node(
            package="tagclip_ros",
            executable="tagger_node",
            name="tagclip_tagger",
            namespace=namespace,
            parameters=[LaunchConfiguration("params_file"),
                        {"device": LaunchConfiguration("device"),
                         "precision": LaunchConfiguration("precision"), "image_transport": transport,
                         "model.weights": LaunchConfiguration("weights"),
                         "depth.enabled": ParameterValue(LaunchConfiguration("depth_enabled"),
                                                         value_type=bool)}],
            # As -p (not in `parameters`): the empty default [] reaches the node the way a
            # params file's does.
            ros_arguments=["-p", ["cameras:=", LaunchConfiguration("cameras")]],
            remappings=[("image", image), ("image/compressed", [image, "/compressed"]),
                        ("depth", LaunchConfiguration("depth")),
                        ("camera_info", LaunchConfiguration("camera_info"))],
            output="screen",
            emulate_tty=True,
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            namespace=namespace,
            arguments=["-d", os.path.join(share, "config", "tagger.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
