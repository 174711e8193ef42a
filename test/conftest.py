"""Shared fixtures: the reference checkpoint, images and scores from $TAGCLIP_FIXTURES (the folder
holding `reference/`; scripts/gpu_check.sh --fixtures sets it), else ../shared/fixtures."""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import socket
from collections.abc import Iterator

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("TAGCLIP_FIXTURES") or os.path.join(os.path.dirname(REPO), "shared", "fixtures")
REFERENCE = os.path.join(FIXTURES, "reference")
WEIGHTS = os.path.join(REFERENCE, "clip_tiny12_seed1.pt")
IMAGES = os.path.join(REFERENCE, "images")
# The libraries that building a model loads (about 4 s and 850 MB on this machine's CPU build):
# what must stay out of the processes that need no model (the feeder, `tagclip --help`).
MODEL_LIBRARIES = ("torch", "torchvision", "open_clip", "timm")


class WritesMarker:
    """A pickled object whose unpickling runs code: it creates the file `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


class RunsShellCommand(WritesMarker):
    """`WritesMarker` through `os.system` (the classic attack): torch's loader blocks that
    module outright, and words its refusal otherwise than for an unknown function."""

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def code_running_checkpoint(folder, name: str = "evil.pt", shell: bool = False) -> tuple[str, str]:
    """(checkpoint, marker): a torch file, shaped like a state dict, whose pickle would create
    `marker` if anything unpickled it (docs/security.md, "No pickles": nothing may); with `shell`, through a
    shell command."""
    import torch
    path, marker = os.path.join(folder, name), os.path.join(folder, f"{name}.code-ran")
    torch.save({"visual.proj": (RunsShellCommand if shell else WritesMarker)(marker)}, path)
    return path, marker


def environment(changes: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with `changes` applied (None: the variable unset)."""
    return {name: value for name, value in {**os.environ, **changes}.items() if value is not None}


@pytest.fixture
def offline_hub(tmp_path) -> Iterator[dict[str, str | None]]:
    """Environment changes (for `environment`) that put a process on a machine without network
    access and with an empty Hugging Face cache, on any machine: the hub's endpoint is a local
    port that refuses connections (bound for the test, never listening), the cache a new folder,
    and neither HF_HUB_OFFLINE nor TAGCLIP_WEIGHTS is set."""
    home = tmp_path / "hf-home"
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        yield {"HF_ENDPOINT": f"http://127.0.0.1:{refusing.getsockname()[1]}", "HF_HOME": str(home),
               "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": None, "TAGCLIP_WEIGHTS": None}


def reference_scores(dataset: str) -> dict:
    with open(os.path.join(REFERENCE, f"scores_{dataset}.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def text_cache_dir(tmp_path_factory) -> str:
    """One text-feature cache for the whole run, so each name is encoded once."""
    return str(tmp_path_factory.mktemp("text-cache"))


@pytest.fixture(scope="session")
def loaded():
    from tagclip_ros.core import load_model
    return load_model(weights=WEIGHTS, device="cpu")


@pytest.fixture(scope="session")
def text_cache(loaded, text_cache_dir):
    from tagclip_ros.core import TextFeatureCache
    return TextFeatureCache(loaded, text_cache_dir)


@pytest.fixture(scope="session")
def voc_tagger(loaded, text_cache):
    from tagclip_ros.core import TagClip, load_vocabulary
    return TagClip(loaded, load_vocabulary("voc"), text_cache=text_cache)
