"""The ROS 2 package builds with colcon (as on a distro) against the PyPI wheels' prefix, after
the vision_msgs it depends on; colcon never builds the bundled copy of vision_msgs itself."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

from .conftest import REPO


def colcon_build(workspace, base_path) -> subprocess.CompletedProcess:
    """`colcon build` of the packages under `base_path`, as on a robot, against the venv's
    prefix (the PyPI wheels), with build, install and log folders in `workspace`."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}",
           "AMENT_PREFIX_PATH": venv, "CMAKE_PREFIX_PATH": venv}
    command = [os.path.join(venv, "bin", "colcon"), "--log-base", str(workspace / "log"), "build",
               "--base-paths", str(base_path), "--build-base", str(workspace / "build"),
               "--install-base", str(workspace / "install"),
               "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    return subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=900)


def test_colcon_builds_the_package(tmp_path):
    # A workspace as on a robot: ws/src/tagclip_ros (the venv must not sit inside the source,
    # CMake refuses exported include paths there), and vision_msgs, which on a robot comes
    # from the distro (rosdep); here the bundled copy stands in for it.
    source = tmp_path / "src" / "tagclip_ros"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", "build", "install", "log", ".git", "__pycache__", "*.egg-info", "bench"))
    shutil.copytree(os.path.join(REPO, "third_party", "vision_msgs"), tmp_path / "src" / "vision_msgs")
    done = colcon_build(tmp_path, tmp_path / "src")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # package.xml's <depend>vision_msgs</depend> orders the build; the copy inside
    # src/tagclip_ros/third_party is not a second vision_msgs (colcon would refuse duplicates)
    assert done.stdout.index("Finished <<< vision_msgs") < done.stdout.index("Starting >>> tagclip_ros")
    assert re.findall(r"^Finished <<< (\S+)", done.stdout, re.M) == ["vision_msgs", "tagclip_ros"]
    share = tmp_path / "install" / "tagclip_ros" / "share" / "tagclip_ros"
    assert (share / "launch" / "tagger.launch.py").is_file()
    assert (share / "config" / "tagger.yaml").is_file()
    assert (share / "config" / "tagger.rviz").is_file()  # for `tagger.launch.py rviz:=true`
    assert os.access(tmp_path / "install" / "tagclip_ros" / "lib" / "tagclip_ros" / "tagger_node", os.X_OK)
    site = "lib/python3*/site-packages"
    generated = glob.glob(str(tmp_path / "install" / "tagclip_ros" / site / "tagclip_ros" / "msg" / "_tag_array.py"))
    installed = glob.glob(str(tmp_path / "install" / "tagclip_ros" / site / "tagclip_ros" / "node" / "tagger.py"))
    vision = glob.glob(str(tmp_path / "install" / "vision_msgs" / site / "vision_msgs" / "msg" / "_classification.py"))
    assert generated and installed and vision


def test_colcon_skips_the_bundled_vision_msgs(tmp_path):
    # third_party/COLCON_IGNORE: even a crawl that starts there finds no package to build
    # over a distro's vision_msgs.
    done = colcon_build(tmp_path, os.path.join(REPO, "third_party"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "vision_msgs" not in done.stdout and not (tmp_path / "install" / "vision_msgs").exists()
