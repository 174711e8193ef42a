"""What the CLI tests share: running `tagclip` as a user does, and the reference tag files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from ..conftest import WEIGHTS, environment

CLIPES = os.path.join(os.path.dirname(WEIGHTS), "clipes")
STEMS = ("astronaut", "chelsea", "coffee", "rocket")
CAM_TOLERANCE = 1e-2
MASK_AGREEMENT = 0.995


def run_cli(*args: str, cache: str, env: dict[str, str | None] | None = None
            ) -> subprocess.CompletedProcess:
    """`python -m tagclip_ros.cli ARGS --cache-dir CACHE` as a separate process, in this
    process's environment with `env`'s changes (see `environment`)."""
    command = [sys.executable, "-m", "tagclip_ros.cli", *args, "--cache-dir", cache]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=environment(env or {}))


def reference_tags() -> dict[str, list[int]]:
    with open(os.path.join(CLIPES, "labels_voc.json"), encoding="utf-8") as f:
        return {os.path.splitext(image)[0]: ids for image, ids in json.load(f).items()}


def tag_lines(stems=STEMS) -> str:
    """The tag file the official classify.py writes for these fixture images."""
    tags = reference_tags()
    return "".join(" ".join([stem, *map(str, tags[stem])]) + "\n" for stem in stems)


def snapshot(folder) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file in a folder."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def model_args(weights: str = WEIGHTS) -> tuple[str, ...]:
    return ("--vocab", "voc", "--weights", weights, "--device", "cpu")


def run_in_process(*args: str, capsys) -> tuple[int, str, str]:
    """`tagclip` run in this process, for the verbs and errors that load no model (a
    subprocess would spend seconds importing torch and open_clip for nothing)."""
    from tagclip_ros.cli import main
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused_in_process(*args: str, capsys) -> str:
    """`tagclip ARGS` refused with status 2 (a usage error), run in this process: its stderr.
    argparse's own refusals raise SystemExit, as they end the process."""
    try:
        code, _, err = run_in_process(*args, capsys=capsys)
    except SystemExit as exited:
        code, err = exited.code, capsys.readouterr().err
    assert code == 2, err
    return err
