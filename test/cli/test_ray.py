"""`tagclip tag` and `segment` with --ray: on a local Ray cluster of 2 CPUs (started once for the
module, shared by every run), 2 workers, the outputs are byte-identical to a one-process run's;
a worker that dies mid-job has its image redone and every output is there once; a driver
killed mid-job leaves what it finished, and a rerun does only the rest. Without ray, --ray says
in one sentence how to install it."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import IMAGES, environment
from .helpers import STEMS, model_args, run_cli, run_in_process, tag_lines
from .test_interrupted_runs import cli_command, contents, image_folder, open_writer, wait_for

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
WORKERS = ("--workers", "2")


@pytest.fixture(scope="module")
def cluster() -> str:
    """The address of a local Ray cluster with 2 CPUs, for this module's runs."""
    import ray  # the bootstrap installs it (requirements/ray.txt): missing, these tests fail
    os.environ.update(RAY_ENV)
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("split") / "split.txt"
    path.write_text("".join(f"{s}\n" for s in STEMS), encoding="utf-8")
    return path


def tag_args(split: Path, root, out: Path) -> tuple[str, ...]:
    return ("tag", "--split", str(split), "--img-root", str(root), "--out", str(out), *model_args())


def segment_args(tags: Path, out: Path) -> tuple[str, ...]:
    return ("segment", "--split", str(tags), "--img-root", IMAGES, "--out", str(out), "--save-cams",
            *model_args())


def one_process(*args: str, cache: str) -> None:
    """A one-process run of `tagclip ARGS`, in this process (no second torch import)."""
    from tagclip_ros.cli import main
    assert main([*args, "--cache-dir", cache]) == 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, split, text_cache_dir) -> dict[str, dict[str, bytes]]:
    """The outputs of one-process `tag` and `segment --save-cams` runs over the fixtures."""
    root = tmp_path_factory.mktemp("one-process")
    one_process(*tag_args(split, IMAGES, root / "tags" / "tags.txt"), cache=text_cache_dir)
    tags = root / "tags"
    assert (tags / "tags.txt").read_text(encoding="utf-8") == tag_lines()
    one_process(*segment_args(tags / "tags.txt", root / "masks"), cache=text_cache_dir)
    return {"tags": contents(tags), "masks": contents(root / "masks")}


def on_ray(*args: str, address: str, cache: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = run_cli(*args, "--ray", address, *WORKERS, cache=cache, env={**RAY_ENV, **(env or {})})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def test_tag_on_ray_writes_what_one_process_writes(tmp_path, cluster, split, reference, text_cache_dir):
    on_ray(*tag_args(split, IMAGES, tmp_path / "tags.txt"), address=cluster, cache=text_cache_dir)
    assert contents(tmp_path) == reference["tags"]


def test_segment_on_ray_writes_what_one_process_writes(tmp_path, cluster, reference, text_cache_dir):
    tags = tmp_path / "tags.txt"
    tags.write_text(tag_lines(), encoding="utf-8")
    on_ray(*segment_args(tags, tmp_path / "masks"), address=cluster, cache=text_cache_dir)
    assert contents(tmp_path / "masks") == reference["masks"]


def test_a_worker_dying_mid_job_loses_nothing_and_writes_nothing_twice(
        tmp_path, cluster, split, reference, text_cache_dir):
    marker = tmp_path / "crashed"  # the first worker to create it exits on its second image
    out = tmp_path / "out"
    on_ray(*tag_args(split, IMAGES, out / "tags.txt"), address=cluster, cache=text_cache_dir,
           env={"TAGCLIP_RAY_TEST_CRASH": str(marker)})
    assert marker.exists()  # a worker did die
    assert contents(out) == reference["tags"]  # every line there, once, in order


def test_a_killed_driver_is_resumed_by_a_rerun(tmp_path, cluster, split, reference, text_cache_dir):
    # coffee, a named pipe, blocks the worker that gets it; the other finishes two images
    blocked = image_folder(tmp_path / "blocked", STEMS[2])
    out = tmp_path / "out"
    args = (*tag_args(split, blocked, out / "tags.txt"), "--ray", cluster, *WORKERS)
    with open(tmp_path / "killed.log", "w+", encoding="utf-8") as log, \
            subprocess.Popen(cli_command(*args, cache=text_cache_dir), stdout=log, stderr=log,
                             env=environment(RAY_ENV)) as driver:
        writer = wait_for(lambda: open_writer(blocked / f"{STEMS[2]}.jpg"), driver, log)
        wait_for(lambda: lines(out / "tags.txt") >= 2 or None, driver, log)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
        os.close(writer)
    finished = lines(out / "tags.txt")
    assert 2 <= finished < len(STEMS)

    image_folder(blocked)  # the pipe becomes the image
    done = on_ray(*tag_args(split, blocked, out / "tags.txt"), address=cluster, cache=text_cache_dir)

    assert f"{finished} of {len(STEMS)} images already done" in done.stderr
    assert f"tagged {len(STEMS) - finished} images" in done.stdout
    assert contents(out) == reference["tags"]


def lines(path: Path) -> int:
    """Whole lines in a file (0 while it does not exist)."""
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0


def test_ray_missing_is_one_sentence_saying_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = run_in_process("tag", "--split", str(tmp_path / "s.txt"), "--img-root", IMAGES,
                                  "--out", str(tmp_path / "o.txt"), "--ray", *model_args(), capsys=capsys)
    assert code == 2
    assert err.strip().splitlines() == ["error: --ray needs the Python package ray, which is not "
                                        "installed: pip install -r requirements/ray.txt (or pip "
                                        "install 'tagclip_ros[ray]')."]
    assert not (tmp_path / "o.txt").exists()


def test_worker_options_without_ray_are_refused(tmp_path, capsys):
    code, _, err = run_in_process("segment", "--split", str(tmp_path / "s.txt"), "--img-root", IMAGES,
                                  "--out", str(tmp_path / "o"), "--workers", "4", *model_args(),
                                  capsys=capsys)
    assert code == 2 and err.strip() == "error: --workers applies only with --ray"


def test_a_worker_that_cannot_load_the_model_stops_the_run_with_its_sentence(
        tmp_path, cluster, split, text_cache_dir, capsys):
    def args(out: Path) -> tuple[str, ...]:
        return ("tag", "--split", str(split), "--img-root", IMAGES, "--out", str(out),
                *model_args(str(tmp_path / "missing" / "ViT-B-16.pt")))
    code, _, one = run_in_process(*args(tmp_path / "one.txt"), "--cache-dir", text_cache_dir, capsys=capsys)
    assert code == 2 and one.startswith("error: ")

    done = run_cli(*args(tmp_path / "ray.txt"), "--ray", cluster, *WORKERS, cache=text_cache_dir, env=RAY_ENV)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == one.strip()  # the one-process run's sentence
    assert lines(tmp_path / "ray.txt") == 0
