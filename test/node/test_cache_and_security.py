"""The tagger as a real process over DDS: a damaged text-feature cache changes nothing, and no
one on the ROS graph can point the node at another file (file and folder parameters are
read-only; runtime parameters still change)."""
from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.parameter import Parameter
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from tagclip_ros.core import TextFeatureCache, read_image
from tagclip_ros.core.pipeline import Perception
from tagclip_ros.msg import TagArray
from tagclip_ros.node.conversions import rgb_to_image
from tagclip_ros.node.harness import LATCHED, Camera, Client, TaggerProcess, wait_until
from tagclip_ros.node.params import profile_from

from ..conftest import IMAGES, WEIGHTS
from ..core.test_text import DAMAGE, damage
from .conftest import answer_for

STARTUP_S = 240
ANSWER_S = 60
NAMESPACE = "/cachesec"
NODE = f"{NAMESPACE}/tagclip_tagger"
# A small vocabulary keeps encoding (85 prompts a name) short on a busy machine.
VOCABULARY = ["cat", "dog", "person", "sofa", "chair"]
BACKGROUND = ["grass", "sky", "wall", "floor", "tree"]
FILE_PARAMETERS = ("model.weights", "model.name", "model.pretrained", "text_cache_dir")


@pytest.fixture(scope="module")
def damaged_cache(loaded, tmp_path_factory) -> tuple[pathlib.Path, Perception]:
    """A folder whose `damaged` cache holds every entry the node needs, each one damaged (each
    kind of damage in turn), and the in-process Perception that encoded them cleanly."""
    root = tmp_path_factory.mktemp("cache")
    clean, damaged = root / "clean", root / "damaged"
    profile = profile_from({"vocabulary": VOCABULARY, "background": BACKGROUND})
    perception = Perception.for_profile(loaded, profile, TextFeatureCache(loaded, str(clean)))
    shutil.copytree(clean, damaged)
    entries = sorted(p.relative_to(damaged) for p in damaged.rglob("*.npy"))
    assert len(entries) >= len(DAMAGE)
    for i, entry in enumerate(entries):
        intact_other = clean / entries[(i + 1) % len(entries)]
        damage(DAMAGE[i % len(DAMAGE)], damaged / entry, intact_other, root)
    return root, perception


@pytest.fixture(scope="module")
def tagger(ros, tmp_path_factory, damaged_cache):
    params = {"model.weights": WEIGHTS, "device": "cpu",
              "text_cache_dir": str(damaged_cache[0] / "damaged"),
              "vocabulary": f"[{', '.join(VOCABULARY)}]",
              "background": f"[{', '.join(BACKGROUND)}]", "segmentation.enabled": False}
    log = str(tmp_path_factory.mktemp("logs") / "cachesec.log")
    process = TaggerProcess(NAMESPACE, log, params)
    info = ros.collect(LabelInfo, f"{NAMESPACE}/label_info", LATCHED)
    try:
        wait_until(lambda: info or process.process.poll() is not None, STARTUP_S, "tagger start")
        assert process.process.poll() is None, process.log()
        yield process
    finally:
        assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


def test_a_damaged_cache_changes_no_score(ros, tagger, damaged_cache, loaded):
    root, perception = damaged_cache
    rgb = read_image(os.path.join(IMAGES, "chelsea.jpg"))
    tags = ros.collect(TagArray, f"{NAMESPACE}/tags")
    camera, frame = Camera(ros, f"{NAMESPACE}/camera"), rgb_to_image(rgb, Header())
    answer = answer_for(tags, camera.send(frame, 7000), ANSWER_S, lambda: camera.send(frame, 7000))
    expected = perception.run(rgb, None).tags
    np.testing.assert_allclose(answer.scores, expected.scores, rtol=0, atol=1e-6)
    assert [t.label for t in answer.tags] == [t.label for t in expected.tags]
    assert not (root / "pickle-ran").exists()  # the pickled entry was never unpickled
    assert "Traceback" not in tagger.log()
    # the node rewrote every entry it needed: a new reader finds them all valid
    reread = TextFeatureCache(loaded, str(root / "damaged"))
    reread.features(perception.vocabulary.all_names, perception.tagger.settings.templates)
    assert reread.encoded_names == 0


def parameter_message(name: str, value):
    return Parameter(name, value=value).to_parameter_msg()


def set_parameter(ros: Client, name: str, value):
    request = SetParameters.Request(parameters=[parameter_message(name, value)])
    return ros.call(SetParameters, f"{NODE}/set_parameters", request).results[0]


def get_parameter(ros: Client, name: str):
    values = ros.call(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=[name]))
    return values.values[0].string_value


@pytest.mark.parametrize("name", FILE_PARAMETERS)
def test_file_parameters_refuse_remote_changes(ros, tagger, name, tmp_path):
    before = get_parameter(ros, name)
    elsewhere = str(tmp_path / "evil.pt")
    result = set_parameter(ros, name, elsewhere)
    assert not result.successful
    assert "read-only" in result.reason and name in result.reason
    assert get_parameter(ros, name) == before != elsewhere
    described = ros.call(DescribeParameters, f"{NODE}/describe_parameters",
                         DescribeParameters.Request(names=[name])).descriptors[0]
    assert described.read_only and described.type == ParameterType.PARAMETER_STRING


def test_start_values_of_file_parameters_are_in_force(ros, tagger, damaged_cache):
    assert get_parameter(ros, "model.weights") == WEIGHTS
    assert get_parameter(ros, "text_cache_dir") == str(damaged_cache[0] / "damaged")


def test_runtime_parameters_still_change(ros, tagger):
    try:
        assert set_parameter(ros, "tag_threshold", 0.25).successful
        values = ros.call(GetParameters, f"{NODE}/get_parameters",
                          GetParameters.Request(names=["tag_threshold"])).values
        assert values[0].double_value == 0.25
    finally:
        assert set_parameter(ros, "tag_threshold", 0.5).successful
