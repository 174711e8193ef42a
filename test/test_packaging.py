"""What users install: the pip package (setup.py); for ros2 launch, the launch file and RViz view.

pip: a wheel built from a copy of the source tree (as a fresh clone has it) carries package.xml's
version, requirements/core.txt's pins, the three commands and every file of `tagclip_ros/`;
installed into an empty venv it gives a working `tagclip --help`; and scripts/bootstrap.sh's
editable install works too. The fresh venvs borrow this venv's already installed dependencies
through a .pth line instead of downloading torch again (pip never sees them: `--no-deps
--ignore-installed`); everything else, the build included, runs offline (`--no-index`,
`--no-build-isolation`).

Launch and RViz (no ROS distro needed): config/tagger.rviz shows `overlay` and `label_mask`
with a QoS the node's publishers serve, and launch/tagger.launch.py (run against stand-ins for
`launch`/`launch_ros`, which are not installable here) declares `rviz` and starts rviz2 in the
tagger's namespace, where the config's relative topic names are the node's.
"""
from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import types
import xml.etree.ElementTree as ElementTree
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

# Building, installing and starting Python with torch on a busy 2-core machine: generous.
TIMEOUT_S = 600
COMMANDS = {"tagclip": "tagclip_ros.cli:main",
            "tagger_node": "tagclip_ros.node.commands:tagger_node",
            "image_source": "tagclip_ros.node.commands:image_source"}


# --- pip packaging ---------------------------------------------------------------------------

def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command to completion; fail the test with its output if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def clean_env() -> dict[str, str]:
    """This process's environment without what would let another Python find this checkout or
    the ROS message prefix (PYTHONPATH from scripts/ros_env.sh)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The source tree as a fresh clone has it (builds write build/ and *.egg-info into it)."""
    copy = tmp_path_factory.mktemp("clone") / "tagclip_ros"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "install", "log", "out", "__pycache__", "*.egg-info",
        ".pytest_cache"))
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    """`pip wheel .` of the copy, with this venv's setuptools."""
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(out), str(source)], env=clean_env())
    wheels = list(out.glob("tagclip_ros-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def empty_venv(path: Path) -> Path:
    """A venv without pip or any package; returns its python."""
    run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path / "bin" / "python"


def add_dependencies(python: Path) -> None:
    """Make this venv's installed packages (torch, setuptools, ...) importable in the venv of
    `python`, after its own: a .pth line naming this venv's site-packages (a plain path, so the
    .pth files there, e.g. this checkout's editable install, are not run)."""
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               env=clean_env()).stdout.strip()
    Path(site, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def pip_into(python: Path, *args: str) -> None:
    """This venv's pip, installing into another interpreter's environment, offline."""
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--ignore-installed", *args], env=clean_env())


def tagclip_help_and_origin(python: Path, cwd: Path) -> tuple[str, str]:
    """`tagclip --help` of the venv of `python`, and where its `tagclip_ros.cli` comes from."""
    help_text = run([str(python.parent / "tagclip"), "--help"], cwd=cwd, env=clean_env()).stdout
    origin = run([str(python), "-c", "import tagclip_ros.cli; print(tagclip_ros.cli.__file__)"],
                 cwd=cwd, env=clean_env()).stdout.strip()
    return help_text, origin


def package_xml_version() -> str:
    """The version in package.xml, read independently of setup.py."""
    root = ElementTree.parse(os.path.join(REPO, "package.xml")).getroot()
    return root.findtext("version").strip()


def core_requirements(name: str = "core") -> list[str]:
    """The requirement lines of requirements/NAME.txt, read independently of setup.py."""
    with open(os.path.join(REPO, "requirements", f"{name}.txt"), encoding="utf-8") as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def test_wheel_metadata_comes_from_package_xml_and_core_requirements(wheel):
    with zipfile.ZipFile(wheel) as archive:
        info = next(n.split("/")[0] for n in archive.namelist()
                    if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.read_string(archive.read(f"{info}/entry_points.txt").decode())
    assert metadata["Name"] == "tagclip_ros"
    assert metadata["Version"] == package_xml_version()
    # the extra `ray` (`pip install .[ray]`, for --ray) holds requirements/ray.txt's pins
    assert metadata.get_all("Provides-Extra") == ["ray"]
    assert metadata.get_all("Requires-Dist") == [
        *core_requirements(), *(f'{r}; extra == "ray"' for r in core_requirements("ray"))]
    assert all("==" in requirement for requirement in [*core_requirements(), *core_requirements("ray")])
    assert dict(entry_points["console_scripts"]) == COMMANDS


def test_wheel_carries_every_file_of_the_package(source, wheel):
    """Nothing the code reads at run time is left out (data files would need package_data),
    and nothing else (tests, benchmarks) goes in."""
    expected = {path.relative_to(source).as_posix() for path in (source / "tagclip_ros").rglob("*")
                if path.is_file() and "__pycache__" not in path.parts}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if ".dist-info/" not in n}
    assert "tagclip_ros/cli/__init__.py" in expected and "tagclip_ros/node/main.py" in expected
    assert shipped == expected


def test_wheel_in_an_empty_venv_gives_the_commands(wheel, tmp_path):
    python = empty_venv(tmp_path / "venv")
    pip_into(python, str(wheel))
    for command, target in COMMANDS.items():
        script = python.parent / command
        assert os.access(script, os.X_OK), command
        module, function = target.split(":")
        assert f"from {module} import {function}" in script.read_text(), command
    add_dependencies(python)  # as `pip install -r requirements/core.txt` would have
    help_text, origin = tagclip_help_and_origin(python, tmp_path)
    assert help_text.startswith("usage: tagclip") and "classify" in help_text
    assert Path(origin).is_relative_to(tmp_path / "venv"), origin


def test_bootstrap_editable_install_works(source, tmp_path):
    """scripts/bootstrap.sh's `pip install --no-deps --config-settings editable_mode=compat -e .`
    (its build needs setuptools, hence the dependencies first)."""
    python = empty_venv(tmp_path / "venv")
    add_dependencies(python)
    pip_into(python, "--no-build-isolation", "--config-settings", "editable_mode=compat",
             "-e", str(source))
    help_text, origin = tagclip_help_and_origin(python, tmp_path)
    assert help_text.startswith("usage: tagclip")
    assert Path(origin).is_relative_to(source), origin


# --- launch file and RViz view ---------------------------------------------------------------

def test_rviz_config_shows_overlay_and_label_mask():
    with open(os.path.join(REPO, "config", "tagger.rviz"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    displays = config["Visualization Manager"]["Displays"]
    images = {d["Topic"]["Value"]: d for d in displays
              if d["Class"] == "rviz_default_plugins/Image"}
    # Relative names: rviz2 resolves them in its namespace, which the launch file makes the
    # tagger's (see test_launch_file_declares_rviz_and_runs_it_in_the_tagger_namespace).
    assert set(images) == {"overlay", "label_mask"}
    for topic, display in images.items():
        assert display["Enabled"] is True, topic
        qos = display["Topic"]
        # The node publishes both reliable and volatile with depth 10: a transient-local reader
        # would be incompatible (no images at all), a best-effort one can lose large images.
        assert qos["Reliability Policy"] == "Reliable", topic
        assert qos["Durability Policy"] == "Volatile", topic
        assert qos["History Policy"] == "Keep Last" and 1 <= qos["Depth"] <= 10, topic


class Recorded:
    """Stands in for any class of `launch` or `launch_ros`: keeps its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and (self.args, self.kwargs) == (other.args, other.kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.args}{self.kwargs}"


class StandInModule(types.ModuleType):
    """A module whose every attribute is a Recorded subclass of that name (made once)."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (Recorded,), {})
        setattr(self, name, cls)
        return cls


SHARE = "/opt/ros/distro/share/tagclip_ros"


@pytest.fixture
def launch_description(monkeypatch) -> Recorded:
    """generate_launch_description() of launch/tagger.launch.py (compiled and run) against
    stand-ins."""
    for name in ("launch", "launch.actions", "launch.conditions", "launch.substitutions",
                 "launch_ros", "launch_ros.actions", "launch_ros.parameter_descriptions",
                 "ament_index_python",
                 "ament_index_python.packages"):
        monkeypatch.setitem(sys.modules, name, StandInModule(name))
    sys.modules["ament_index_python.packages"].get_package_share_directory = (
        lambda package: {"tagclip_ros": SHARE}[package])
    path = os.path.join(REPO, "launch", "tagger.launch.py")
    spec = importlib.util.spec_from_file_location("tagger_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_launch_file_declares_rviz_and_runs_it_in_the_tagger_namespace(launch_description):
    entities = launch_description.args[0]
    arguments = {e.args[0]: e.kwargs.get("default_value") for e in entities
                 if type(e).__name__ == "DeclareLaunchArgument"}
    assert arguments.keys() >= {"image", "compressed", "params_file", "device", "precision",
                                "weights", "namespace", "rviz"}
    assert arguments["rviz"] == "false" and arguments["namespace"] == ""
    nodes = {e.kwargs["executable"]: e for e in entities if type(e).__name__ == "Node"}
    tagger, rviz = nodes["tagger_node"], nodes["rviz2"]
    assert "condition" not in tagger.kwargs
    configuration = type(tagger.kwargs["namespace"])
    assert configuration.__name__ == "LaunchConfiguration"
    namespace = configuration("namespace")
    assert tagger.kwargs["namespace"] == namespace and rviz.kwargs.get("namespace") == namespace
    condition = rviz.kwargs["condition"]
    assert type(condition).__name__ == "IfCondition" and condition.args == (configuration("rviz"),)
    assert rviz.kwargs["package"] == "rviz2"
    flag, config = rviz.kwargs["arguments"]
    assert flag == "-d" and config == f"{SHARE}/config/tagger.rviz"
    # CMakeLists.txt installs config/ to share/tagclip_ros (test_package_build checks it).
    assert os.path.isfile(os.path.join(REPO, os.path.relpath(config, SHARE)))


def test_launch_file_remaps_depth_and_camera_info_and_enables_depth(launch_description):
    entities = launch_description.args[0]
    arguments = {e.args[0]: e.kwargs.get("default_value") for e in entities
                 if type(e).__name__ == "DeclareLaunchArgument"}
    assert (arguments["depth_enabled"], arguments["depth"], arguments["camera_info"]) == \
        ("false", "depth", "camera_info")
    [tagger] = [e for e in entities if type(e).__name__ == "Node" and e.kwargs["executable"] == "tagger_node"]
    configuration = type(tagger.kwargs["namespace"])
    remappings = dict(tagger.kwargs["remappings"])
    assert remappings["depth"] == configuration("depth")
    assert remappings["camera_info"] == configuration("camera_info")
    enabled = tagger.kwargs["parameters"][1]["depth.enabled"]
    assert enabled.args == (configuration("depth_enabled"),) and enabled.kwargs == {"value_type": bool}


def test_launch_file_passes_cameras_to_the_node(launch_description):
    entities = launch_description.args[0]
    arguments = {e.args[0]: e.kwargs.get("default_value") for e in entities
                 if type(e).__name__ == "DeclareLaunchArgument"}
    assert arguments["cameras"] == "[]"
    [tagger] = [e for e in entities if type(e).__name__ == "Node" and e.kwargs["executable"] == "tagger_node"]
    configuration = type(tagger.kwargs["namespace"])
    assert tagger.kwargs["ros_arguments"] == ["-p", ["cameras:=", configuration("cameras")]]
