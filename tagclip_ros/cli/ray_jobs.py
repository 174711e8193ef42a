"""`--ray`: the dataset verbs (`tag`, `segment`) with their images spread over Ray actors.

Each worker is a Ray actor holding one model (built by the verb's own builder); it reads an
image by its path, runs the model and returns what the one-process loop would have computed.
The driver keeps everything else: which images are done (resuming), the one progress bar, the
failure accounting and every write, through the verb's own functions, so that outputs are
byte-identical to a one-process run and each is written once. A worker that dies is restarted
by Ray, which retries its images on it (on another node if its own is lost); one that cannot
come back has its images sent to the other workers. ray is imported only here, and only for
--ray (docs/ray.md).
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm import tqdm

from .common import (PROGRESS_MIN_IMAGES, non_negative_float, positive_float, positive_int, profile_from,
                     report)

T = TypeVar("T")
INSTALL_HINT = ("--ray needs the Python package ray, which is not installed: "
                "pip install -r requirements/ray.txt (or pip install 'tagclip_ros[ray]').")
LOCAL = "local"  # ray.init's address for "start a new local cluster"
IN_FLIGHT_PER_WORKER = 2  # images queued on a worker, so that it never waits for the driver
RESTARTS = 3  # times Ray restarts a dead worker (and retries its images on it)
# Test hook: a marker file; the first worker to create it exits abruptly on its second image.
CRASH_VARIABLE = "TAGCLIP_RAY_TEST_CRASH"


class RayUnavailableError(ValueError):
    """--ray without the ray package, or a cluster that cannot run the job: one sentence."""


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS], --workers, --gpus-per-worker, --cpus-per-worker."""
    group = parser.add_argument_group("Ray cluster (docs/ray.md)")
    group.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                       help="spread the images over model replicas on a Ray cluster: ADDRESS is "
                            "the head's host:port (or 'auto'); none or 'local' starts a local one")
    group.add_argument("--workers", type=positive_int, default=2, metavar="N",
                       help="with --ray: model replicas, one Ray actor each (default 2)")
    group.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0, metavar="G",
                       help="with --ray: GPUs each worker reserves, fractions allowed (default 0)")
    group.add_argument("--cpus-per-worker", type=positive_float, default=1.0, metavar="C",
                       help="with --ray: CPUs each worker reserves (default 1)")
    group.add_argument("--threads-per-worker", type=positive_int, default=None, metavar="N",
                       help="with --ray: torch threads of each worker (default: as many as one "
                            "process here uses, which keeps outputs byte-identical to a one-process "
                            "run; fewer can be faster where workers share cores, with scores that "
                            "may differ in their last bits)")


def check_ray_arguments(args: argparse.Namespace) -> None:
    """With --ray: that ray imports (else one sentence saying how to install it), before any
    work. Without it: the worker options are refused rather than silently ignored."""
    if args.ray is None:
        given = [flag for flag, default, value in (
            ("--workers", 2, args.workers), ("--gpus-per-worker", 0.0, args.gpus_per_worker),
            ("--cpus-per-worker", 1.0, args.cpus_per_worker),
            ("--threads-per-worker", None, args.threads_per_worker)) if value != default]
        if given:
            raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} "
                             "only with --ray")
        return
    import_ray()


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(INSTALL_HINT) from None
    return ray


def default_threads() -> int:
    """torch's threads in this process: those of a one-process run. A worker uses as many,
    since the number of threads can change the order of a sum, and so a score's last bits
    (Ray would give it one thread per reserved CPU)."""
    import torch
    return torch.get_num_threads()


def worker_environment() -> dict[str, str]:
    """Environment variables of the worker processes: OpenMP threads that wait passively (this
    process's OMP_WAIT_POLICY if set), so that workers sharing a node's cores do not spin
    against each other's threads (measured: 2 workers of 2 threads on 2 cores ran 25x slower
    spinning); the wait policy does not change any result."""
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def worker_config(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed arguments a worker needs (the picklable ones), with the weights file resolved
    here (absolute; $TAGCLIP_WEIGHTS read here), so that every worker loads what this run names."""
    from ..core.loading import weights_setting
    config = argparse.Namespace(**{k: v for k, v in vars(args).items() if not callable(v)})
    config.weights = weights_setting(args.weights)
    if config.weights:
        config.weights = os.path.abspath(config.weights)
    if config.cache_dir:
        config.cache_dir = os.path.abspath(config.cache_dir)
    return config


class Worker:
    """One model replica (the body of a Ray actor): `tag` or `segment` one image by its path.
    Each returns ('ok', ...) or ('failed', the message the one-process run reports)."""

    def __init__(self, verb: str, config: argparse.Namespace, profile, threads: int,
                 crash_marker: str | None):
        import torch
        torch.set_num_threads(threads)
        self.verb, self.config, self.crash_marker, self.images = verb, config, crash_marker, 0
        self.error = None
        from . import user_errors
        try:
            self.build(profile)
        except user_errors() as exc:  # e.g. a weights file this node cannot read: said once, by the driver
            self.error = str(exc)

    def build(self, profile) -> None:
        from .common import build_classifier
        from .segment import build_segmenter
        if self.verb == "tag":
            self.classifier = build_classifier(self.config, profile)
        else:
            self.segmenter, self.settings = build_segmenter(self.config, profile)

    def ready(self) -> str | None:
        """None once the model is loaded, else the sentence saying why it could not be."""
        return self.error

    def read(self, path: str):
        from ..core import read_image
        self.images += 1
        if self.crash_marker and self.images == 2 and claim(self.crash_marker):
            os._exit(1)  # the test hook: a worker process dying mid-job
        return read_image(path)

    def tag(self, path: str) -> tuple:
        from ..core import ImageError
        from ..core.image import downscale_note
        from .tag import tag_ids
        try:
            rgb = self.read(path)
        except ImageError as exc:
            return "failed", str(exc)
        classifier = self.classifier
        note = downscale_note(*rgb.shape[:2], classifier.loaded.patch_size,
                              classifier.settings.max_input_side)
        result = classifier.classify(rgb)
        return "ok", tag_ids(result), result.scores, note

    def segment(self, path: str, ids: list[int]) -> tuple:
        from ..core import ImageError
        from .segment import segment_image
        try:
            rgb = self.read(path)
        except ImageError as exc:
            return "failed", str(exc)
        mask, cams = segment_image(rgb, ids, self.segmenter, self.config, self.settings)
        return "ok", mask, cams


def claim(marker: str) -> bool:
    """Create `marker` if no one has: True for exactly one caller."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


class RayPool:
    """`workers` Worker actors on the cluster `address` (LOCAL: a new local one), connected on
    entering and released on leaving (a cluster it started is shut down)."""

    def __init__(self, verb: str, args: argparse.Namespace) -> None:
        self.verb, self.args = verb, args
        self.ray = import_ray()
        self.started = False
        self.actors: list = []

    def __enter__(self) -> RayPool:
        ray, args = self.ray, self.args
        if not ray.is_initialized():
            ray.init(address=args.ray, include_dashboard=False, logging_level=logging.WARNING,
                     configure_logging=True, log_to_driver=True)
            self.started = True
        try:
            self.check_resources()
            worker = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS)(Worker)
            threads = args.threads_per_worker or default_threads()
            config = worker_config(args)
            profile = profile_from(args)  # names files are read here: workers get the classes
            options = {"num_cpus": args.cpus_per_worker, "num_gpus": args.gpus_per_worker,
                       "runtime_env": {"env_vars": worker_environment()}}
            crash = os.environ.get(CRASH_VARIABLE)
            self.actors = [worker.options(**options).remote(self.verb, config, profile, threads, crash)
                           for _ in range(args.workers)]
            for error in ray.get([actor.ready.remote() for actor in self.actors]):
                if error:
                    raise ValueError(error)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def check_resources(self) -> None:
        """One sentence, rather than a job waiting for ever, when not even one worker fits."""
        total = self.ray.cluster_resources()
        for name, flag, need in (("CPU", "--cpus-per-worker", self.args.cpus_per_worker),
                                 ("GPU", "--gpus-per-worker", self.args.gpus_per_worker)):
            if need > total.get(name, 0.0):
                raise RayUnavailableError(
                    f"the Ray cluster has {total.get(name, 0.0):g} {name}s in all, fewer than "
                    f"{flag} {need:g}: start its nodes with more, or ask for fewer")

    def __exit__(self, *_) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False

    def map(self, method: str, calls: Sequence[tuple], what: str) -> Iterator[tuple[int, Any]]:
        """(index into `calls`, the worker's return) for each call of `method` with those
        arguments, in the order they finish, under one progress bar. At most
        IN_FLIGHT_PER_WORKER calls wait on a worker; a worker that dies for good has its
        calls sent to the others (each call's result is given once)."""
        ray = self.ray
        pending = collections.deque(range(len(calls)))
        alive = list(range(len(self.actors)))
        load = [0] * len(self.actors)
        in_flight: dict = {}
        bar = tqdm(total=len(calls), desc=what, unit="img", file=sys.stderr,
                   disable=len(calls) < PROGRESS_MIN_IMAGES)
        try:
            while pending or in_flight:
                for worker in alive:
                    while pending and load[worker] < IN_FLIGHT_PER_WORKER:
                        index = pending.popleft()
                        ref = getattr(self.actors[worker], method).remote(*calls[index])
                        in_flight[ref] = worker, index
                        load[worker] += 1
                if not in_flight:
                    raise RayUnavailableError(
                        "every Ray worker died; the images finished so far are kept: run the "
                        "same command again to do the rest")
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                worker, index = in_flight.pop(ref)
                load[worker] -= 1
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    if worker in alive:
                        alive.remove(worker)
                        report(f"a Ray worker died for good ({type(exc).__name__}); its images "
                               f"go to the {len(alive)} others")
                    pending.appendleft(index)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None
                bar.update(1)
                yield index, value
        finally:
            bar.close()


def run_each(verb: str, args: argparse.Namespace, items: Sequence[T], calls: Callable[[T], tuple],
             failures: list[str]) -> Iterator[tuple[T, tuple]]:
    """(item, the worker's results after 'ok') for every item whose image the workers read, in
    the order they finish; the others are reported, skipped and added to `failures`, as
    common.read_each does."""
    with RayPool(verb, args) as pool:
        for index, value in pool.map(verb, [calls(item) for item in items], verb):
            if value[0] == "failed":
                failures.append(value[1])
                report(f"skipping {value[1]}")
                continue
            yield items[index], value[1:]
