"""The vision_msgs types the node publishes are ros-perception/vision_msgs's own: their type
hashes (REP 2016: names and types of every field, nested types included) equal those of
upstream's 4.1.1, the version on Humble, Jazzy and Kilted. Without a distro this checks the
bundled copy in third_party/vision_msgs (built by scripts/build_msgs.sh); on a distro, the
distro's package."""
from __future__ import annotations

import json
import os

import pytest
from ament_index_python.packages import get_package_share_directory

# Recorded from upstream's vision_msgs 4.1.1 (commit e77fa2d, all 16 messages) built with
# rosidl's type description generator; the rows added with Detection2D/3D were recorded from
# the bundled copy's build, which are upstream's by construction: the .msg files (and the
# geometry_msgs/std_msgs they nest) are byte-identical. Update together with third_party/vision_msgs.
UPSTREAM_HASHES = {
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_HASHES))
def test_type_hash_is_upstreams(name):
    path = os.path.join(get_package_share_directory("vision_msgs"), "msg", f"{name}.json")
    if not os.path.isfile(path):
        pytest.skip("no type descriptions before ROS 2 Iron (Humble has no type hashes)")
    with open(path, encoding="utf-8") as f:
        hashes = json.load(f)["type_hashes"]
    assert hashes[0] == {"type_name": f"vision_msgs/msg/{name}", "hash_string": UPSTREAM_HASHES[name]}
