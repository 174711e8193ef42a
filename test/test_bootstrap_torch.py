"""Which torch scripts/bootstrap.sh installs (scripts/torch_constraints.py), run as bootstrap runs
it, without installing anything: the pinned requirements/torch.txt by default; on a Jetson or
with TAGCLIP_SYSTEM_TORCH=1 the torch already importable, pinned by pip constraints, or a stop
with one sentence when there is none to keep.

"Already importable" torch/torchvision are small fake packages on PYTHONPATH reporting a version
and `torch.version.cuda`; with `python -S` they are the only ones this Python sees. A Jetson is a
temporary root with etc/nv_tegra_release.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

SCRIPT = os.path.join(REPO, "scripts", "torch_constraints.py")
REQUIREMENTS = Path(REPO, "requirements")
JETPACK_TORCH = "2.5.0a0+872d972e41.nv24.08"
JETSON_TORCHVISION = "0.20.0a0+afc54f7"


def fake_package(path: Path, name: str, version: str, cuda: str | None = None,
                 dist_version: str | None = None, error: str | None = None) -> Path:
    """A package `name` under `path` reporting `version` (and, for torch, `version.cuda`), with
    an installed distribution's metadata when `dist_version` is given, or raising `error` on
    import (a broken install)."""
    package = path / name
    package.mkdir(parents=True)
    if error:
        (package / "__init__.py").write_text(f"raise OSError({error!r})\n")
        return path
    (package / "__init__.py").write_text(f"__version__ = {version!r}\nfrom . import version\n")
    (package / "version.py").write_text(f"cuda = {cuda!r}\n")
    if dist_version:
        info = path / f"{name}-{dist_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist_version}\n")
    return path


def jetson_root(path: Path) -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    return path


def run_script(*args: str, root: Path, pythonpath: Path | None = None, switch: str | None = None,
               alone: bool = True) -> subprocess.CompletedProcess:
    """torch_constraints.py ARGS --root ROOT; `alone`: `python -S`, so that only PYTHONPATH's
    packages (not this venv's torch) are importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TAGCLIP_SYSTEM_TORCH")}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    if switch is not None:
        env["TAGCLIP_SYSTEM_TORCH"] = switch
    command = [sys.executable, *(["-S"] if alone else []), SCRIPT, *args, "--root", str(root)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def pins(output: str) -> list[str]:
    """The constraint lines of the script's output (comments dropped)."""
    return [line for line in output.splitlines() if line and not line.startswith("#")]


def one_sentence_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and text.strip().endswith(".")


@pytest.mark.parametrize("jetson, switch, expected", [
    (False, None, "pinned"),  # this machine and CI: requirements/torch.txt, as before
    (False, "", "pinned"),
    (True, None, "system"),  # a Jetson keeps JetPack's torch by itself
    (False, "1", "system"),
    (True, "0", "pinned"),  # ... unless told not to
])
def test_mode(tmp_path, jetson, switch, expected):
    root = jetson_root(tmp_path) if jetson else tmp_path
    done = run_script("mode", root=root, switch=switch)
    assert (done.returncode, done.stdout, done.stderr) == (0, expected + "\n", "")


def test_unknown_switch_value_stops(tmp_path):
    done = run_script("mode", root=tmp_path, switch="yes")
    assert done.returncode == 1 and done.stdout == ""
    assert "TAGCLIP_SYSTEM_TORCH='yes' must be 1" in done.stderr and one_sentence_line(done.stderr)


def test_constraints_pin_the_importable_torch_and_torchvision(tmp_path):
    packages = fake_package(tmp_path / "site", "torch", JETPACK_TORCH, cuda="12.6")
    fake_package(packages, "torchvision", JETSON_TORCHVISION)
    done = run_script("constraints", root=jetson_root(tmp_path / "root"), pythonpath=packages)
    assert done.returncode == 0 and done.stderr == ""
    assert pins(done.stdout) == [f"torch=={JETPACK_TORCH}", f"torchvision=={JETSON_TORCHVISION}"]
    assert "CUDA 12.6" in done.stdout.splitlines()[0]


def test_constraints_use_the_version_pip_sees(tmp_path):
    """torch.__version__ carries a local label (+cu130) that the installed distribution's
    version lacks; `torch==2.14.1+cu130` would not match what pip finds installed."""
    packages = fake_package(tmp_path / "site", "torch", "2.14.1+cu130", cuda="13.0", dist_version="2.14.1")
    fake_package(packages, "torchvision", "0.29.1+cu130", dist_version="0.29.1")
    done = run_script("constraints", root=tmp_path, pythonpath=packages, switch="1")
    assert done.returncode == 0, done.stderr
    assert pins(done.stdout) == ["torch==2.14.1", "torchvision==0.29.1"]


def test_a_distribution_elsewhere_is_not_the_imported_torch(tmp_path):
    """With this venv's site-packages visible, its torch distribution (not the one imported,
    which PYTHONPATH shadows) must not lend its version."""
    packages = fake_package(tmp_path / "site", "torch", JETPACK_TORCH, cuda="12.6")
    done = run_script("constraints", root=tmp_path, pythonpath=packages, switch="1", alone=False)
    assert done.returncode == 0, done.stderr
    assert pins(done.stdout)[0] == f"torch=={JETPACK_TORCH}"


def test_missing_torchvision_is_a_warning(tmp_path):
    packages = fake_package(tmp_path / "site", "torch", JETPACK_TORCH, cuda="12.6")
    done = run_script("constraints", root=jetson_root(tmp_path / "root"), pythonpath=packages)
    assert done.returncode == 0 and pins(done.stdout) == [f"torch=={JETPACK_TORCH}"]
    assert done.stderr.startswith("warning: torchvision is not importable") and one_sentence_line(done.stderr)


@pytest.mark.parametrize("broken", [False, True])
def test_no_torch_to_keep_stops_with_one_sentence(tmp_path, broken):
    packages = (fake_package(tmp_path / "site", "torch", "", error="libcudart.so.12: cannot open")
                if broken else None)
    done = run_script("constraints", root=jetson_root(tmp_path / "root"), pythonpath=packages)
    assert done.returncode == 1 and done.stdout == ""
    assert "has no importable torch to keep" in done.stderr and 'docs/jetson.md' in done.stderr
    assert one_sentence_line(done.stderr)


def test_cpu_only_torch_on_a_jetson_stops(tmp_path):
    packages = fake_package(tmp_path / "site", "torch", "2.14.1", cuda=None)
    fake_package(packages, "torchvision", "0.29.1")
    done = run_script("constraints", root=jetson_root(tmp_path / "root"), pythonpath=packages)
    assert done.returncode == 1 and done.stdout == ""
    assert "is a CPU-only build, which cannot use the Jetson's GPU" in done.stderr
    assert one_sentence_line(done.stderr)


def test_cpu_only_torch_kept_on_request_is_a_warning(tmp_path):
    packages = fake_package(tmp_path / "site", "torch", "2.14.1", cuda=None)
    fake_package(packages, "torchvision", "0.29.1")
    done = run_script("constraints", root=tmp_path, pythonpath=packages, switch="1")
    assert done.returncode == 0 and pins(done.stdout) == ["torch==2.14.1", "torchvision==0.29.1"]
    assert "CPU-only build" in done.stderr and one_sentence_line(done.stderr)


def requirement_names(path: Path) -> dict[str, str]:
    """Requirement name (lower case) → its line, for a requirements file."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[=<>!~;\[ ]", line)[0].lower(): line for line in lines if line}


def test_torch_is_pinned_in_torch_txt_only():
    core, torch_txt = (requirement_names(REQUIREMENTS / name) for name in ("core.txt", "torch.txt"))
    assert not {"torch", "torchvision"} & core.keys()
    assert torch_txt.keys() == {"torch", "torchvision"}
    assert all(re.fullmatch(r"[a-z]+==\d+(\.\d+)+", line) for line in torch_txt.values()), torch_txt
    for name in ("ros.txt", "test.txt", "ray.txt"):
        assert not {"torch", "torchvision"} & requirement_names(REQUIREMENTS / name).keys(), name


def test_bootstrap_script_parses():
    done = subprocess.run(["bash", "-n", os.path.join(REPO, "scripts", "bootstrap.sh")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
