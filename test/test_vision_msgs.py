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
# rosidl's type description generator; update together with third_party/vision_msgs.
UPSTREAM_HASHES = {
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
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
