"""The README's standalone commands, run exactly as printed: each `<!-- readme-test: NAME -->`
block holds two terminals (the tagger, then a source), run from a folder laid out like the
repository root, in a shell that has not sourced anything, so that the README and what works
cannot drift apart.

The reference checkpoint stands in for OpenAI's weights through `TAGCLIP_WEIGHTS`, as the README
says to do offline."""
from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import cv2
import pytest

from .conftest import REPO, WEIGHTS

START_S = 300  # bootstrapped already; loading torch and the model on a busy 2-core machine
PASS_S = 600  # a pass over samples/
MARKER = re.compile(r"<!-- readme-test: (\w+) -->\n```bash\n(.*?)```", re.S)
SAMPLES = sorted(os.listdir(os.path.join(REPO, "samples")))


def readme_blocks() -> dict[str, list[str]]:
    """Each marked block of README.md as its terminals' scripts, split at `# terminal` lines."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = {}
    for name, body in MARKER.findall(text):
        terminals = re.split(r"^# terminal.*\n", body, flags=re.M)
        blocks[name] = [script for script in terminals if script.strip()]
    return blocks


BLOCKS = readme_blocks()


@pytest.fixture
def root(tmp_path) -> str:
    """A folder laid out like the repository root (what the commands use is linked in), where a
    source file the README names can be made without touching the checkout."""
    for name in ("scripts", ".venv", "install", "samples"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    return str(tmp_path)


def environment(tmp_path) -> dict[str, str]:
    """A user's shell: no ROS variables set (nor the wheels' marker that their libraries are on
    the path), a fresh DDS domain, offline weights."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("ROS_", "_ROS_", "AMENT_", "FASTDDS_", "RMW_")) and name not in
           ("PYTHONPATH", "LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH")}
    return {**env, "ROS_DOMAIN_ID": str(random.randint(100, 200)), "TAGCLIP_WEIGHTS": WEIGHTS,
            "TAGCLIP_CACHE": str(tmp_path / "cache")}


class Terminal:
    """One terminal's script, run by bash in its own process group, its output in a file."""

    def __init__(self, script: str, cwd: str, env: dict[str, str], log: str) -> None:
        self.log_path = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(["bash", "-euc", script], cwd=cwd, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, text: str, timeout: float) -> None:
        """Until `text` is in the output; fails with the output if the script ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, f"ended before {text!r}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.output()}"
            time.sleep(0.1)

    def interrupt(self) -> int:
        """Ctrl-C, as in a terminal (the whole foreground group); the exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def write_clip(path: str, frames: int = 30) -> None:
    """An MP4 of the samples, one per frame in turn."""
    images = [cv2.resize(cv2.imread(os.path.join(REPO, "samples", name)), (320, 240))
              for name in SAMPLES]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 15, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write MP4 here"
    for index in range(frames):
        writer.write(images[index % len(images)])
    writer.release()


def test_the_readme_has_both_blocks_of_two_terminals():
    assert sorted(BLOCKS) == ["compressed", "raw"]
    assert all(len(terminals) == 2 for terminals in BLOCKS.values()), BLOCKS


@contextlib.contextmanager
def tagger(script: str, root: str, env: dict[str, str], log: str, topic: str) -> Iterator[None]:
    """The tagger terminal, while it listens on `topic`; Ctrl-C then ends it with status 0 and
    no stack trace."""
    node = Terminal(script, root, env, log)
    try:
        node.wait_for(f"active: listening on {topic}", START_S)
        yield
    finally:
        assert node.interrupt() == 0, node.output()
    assert "Traceback" not in node.output()


def test_raw_pair_tags_every_sample_once_and_exits(root, tmp_path):
    node_script, source_script = BLOCKS["raw"]
    env = environment(tmp_path)
    with tagger(node_script, root, env, str(tmp_path / "node.log"), "/camera/image"):
        source = Terminal(source_script, root, env, str(tmp_path / "source.log"))
        try:
            code = source.process.wait(PASS_S)
        finally:
            source.interrupt()
        printed = source.output()
        assert code == 0, printed
        for name in SAMPLES:
            assert len(re.findall(rf"^{re.escape(name)}: ", printed, re.M)) == 1, printed
        assert "going on" not in printed and "Traceback" not in printed, printed


def test_compressed_pair_tags_a_video_until_ctrl_c(root, tmp_path):
    node_script, source_script = BLOCKS["compressed"]
    write_clip(os.path.join(root, "clip.mp4"))
    env = environment(tmp_path)
    with tagger(node_script, root, env, str(tmp_path / "node.log"), "/camera/image/compressed"):
        source = Terminal(source_script, root, env, str(tmp_path / "source.log"))
        try:
            deadline = time.monotonic() + PASS_S
            while len(re.findall(r"^clip\.mp4\[\d+\]: ", source.output(), re.M)) < 3:
                assert source.process.poll() is None, source.output()
                assert time.monotonic() < deadline, source.output()
                time.sleep(0.2)
        finally:
            assert source.interrupt() == 0, source.output()
        assert "Traceback" not in source.output()


@pytest.mark.parametrize("program", ["tagger_node", "image_source"])
def test_without_the_environment_the_executables_say_what_to_source(tmp_path, program):
    """The README's commands without `. scripts/ros_env.sh` first: one sentence, status 2."""
    result = subprocess.run([os.path.join(REPO, ".venv", "bin", program)], env=environment(tmp_path),
                            capture_output=True, text=True, timeout=START_S)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and ". scripts/ros_env.sh .venv install" in result.stderr, \
        result.stderr
    assert result.stdout == ""


def test_the_readme_names_the_image_files_a_folder_stands_for():
    from tagclip_ros.core.image import IMAGE_EXTENSIONS
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert f"(`{' '.join(IMAGE_EXTENSIONS)}`, any case, in name order)" in f.read()
