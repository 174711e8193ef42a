"""The ROS 2 package builds with colcon (as on a distro) against the PyPI wheels' prefix."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from .conftest import REPO


def test_colcon_builds_the_package(tmp_path):
    # A workspace as on a robot: ws/src/tagclip_ros (the venv must not sit inside the source,
    # CMake refuses exported include paths there).
    source = tmp_path / "src" / "tagclip_ros"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", "build", "install", "log", ".git", "__pycache__", "*.egg-info", "bench"))
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}",
           "AMENT_PREFIX_PATH": venv, "CMAKE_PREFIX_PATH": venv}
    command = [os.path.join(venv, "bin", "colcon"), "--log-base", str(tmp_path / "log"), "build",
               "--base-paths", str(tmp_path / "src"), "--build-base", str(tmp_path / "build"),
               "--install-base", str(tmp_path / "install"),
               "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    share = tmp_path / "install" / "tagclip_ros" / "share" / "tagclip_ros"
    assert (share / "launch" / "tagger.launch.py").is_file()
    assert (share / "config" / "tagger.yaml").is_file()
    assert os.access(tmp_path / "install" / "tagclip_ros" / "lib" / "tagclip_ros" / "tagger_node", os.X_OK)
    generated = glob.glob(str(tmp_path / "install" / "tagclip_ros" / "lib" / "python3*" /
                              "site-packages" / "tagclip_ros" / "msg" / "_tag_array.py"))
    installed = glob.glob(str(tmp_path / "install" / "tagclip_ros" / "lib" / "python3*" /
                              "site-packages" / "tagclip_ros" / "node" / "tagger.py"))
    assert generated and installed
