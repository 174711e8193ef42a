"""`./run.sh`, the main job, as a user runs it: it prints the tags of samples/ and exits 0, and
when the node cannot configure it says why and exits non-zero instead of waiting forever.

The environment is bootstrapped already (run.sh's bootstrap is then a stamp check), and the
reference checkpoint stands in for OpenAI's weights, so no network is needed."""
from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

from .conftest import REPO, WEIGHTS

FAIL_FAST_S = 60  # the bound: "exits non-zero within a minute"
RUN_S = 600  # a whole pass over samples/ on a busy 2-core machine; normally ~1 min


def run_sh(timeout: float, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run ./run.sh in its own DDS domain; returns the finished process and its run time."""
    environment = {**os.environ, "TAGCLIP_WEIGHTS": WEIGHTS,
                   "ROS_DOMAIN_ID": str(random.randint(100, 200)), **env}
    begin = time.monotonic()
    try:
        done = subprocess.run([os.path.join(REPO, "run.sh")], env=environment, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"run.sh still running after {timeout} s:\n{exc.output}")
    return done, time.monotonic() - begin


def impossible_device() -> str:
    """A CUDA device this machine lacks: plain `cuda` without a GPU, else one past the last."""
    import torch
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def test_run_sh_says_why_and_exits_when_the_node_cannot_configure():
    device = impossible_device()
    done, seconds = run_sh(FAIL_FAST_S, TAGCLIP_DEVICE=device)
    print(f"run.sh with TAGCLIP_DEVICE={device}: exit status {done.returncode} "
          f"after {seconds:.1f} s")
    assert done.returncode != 0, done.stdout
    reason = next((line for line in done.stdout.splitlines()
                   if line.startswith("[run] the tagger could not start:")), None)
    assert reason and f"device '{device}'" in reason, done.stdout  # the node's own sentence
    assert "publishing" not in done.stdout and "Traceback" not in done.stdout, done.stdout


def test_run_sh_prints_the_tags_of_the_samples_and_exits_0():
    done, seconds = run_sh(RUN_S)
    print(f"run.sh: exit status {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 0, done.stdout
    samples = sorted(os.listdir(os.path.join(REPO, "samples")))
    tagged = [line.split(":")[0] for line in done.stdout.splitlines()
              if line.split(":")[0] in samples and ": " in line]
    assert sorted(tagged) == samples, done.stdout
    assert "Traceback" not in done.stdout, done.stdout
