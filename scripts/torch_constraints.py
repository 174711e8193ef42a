#!/usr/bin/env python3
"""Which torch scripts/bootstrap.sh installs: the pinned one, or the one the system already has.

    torch_constraints.py mode [--root DIR]         prints "pinned" or "system"
    torch_constraints.py constraints [--root DIR]  prints pip constraints pinning this Python's torch

pinned (the default): the venv gets requirements/torch.txt (torch and torchvision, pinned).
system: TAGCLIP_SYSTEM_TORCH=1, or a Jetson (DIR/etc/nv_tegra_release) unless
TAGCLIP_SYSTEM_TORCH=0. JetPack ships its own CUDA-enabled torch, and PyPI's would replace it
with one that cannot see the GPU, everything then running silently on the CPU. So the venv is
made with --system-site-packages, requirements/torch.txt is never installed, and the other
requirements are installed with constraints pinning the torch (and torchvision) this Python
already imports: pip then fails loudly rather than replacing them (PyPI's torchvision pins an
exact torch, and open_clip needs torchvision).

`constraints` must run with the venv's Python. It exits 1 with one sentence on stderr when that
Python has no importable torch, or a CPU-only one on a Jetson. Standard library only: `mode`
runs before the venv exists.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib import metadata
from types import ModuleType

JETSON_MARK = os.path.join("etc", "nv_tegra_release")
README = 'docs/jetson.md'
SWITCH = "TAGCLIP_SYSTEM_TORCH"


class StopError(Exception):
    """A reason to stop the bootstrap, one sentence."""


def is_jetson(root: str) -> bool:
    """A Jetson (L4T) says so in /etc/nv_tegra_release."""
    return os.path.exists(os.path.join(root, JETSON_MARK))


def mode(root: str, switch: str | None) -> str:
    """`system` (keep the torch this machine has) or `pinned` (install requirements/torch.txt),
    from TAGCLIP_SYSTEM_TORCH (1 or 0) or, when it is unset or empty, whether this is a Jetson."""
    switch = (switch or "").strip()
    if switch not in ("", "0", "1"):
        raise StopError(f"{SWITCH}={switch!r} must be 1 (keep the system's torch), 0 (install "
                        "requirements/torch.txt) or unset (1 on a Jetson)")
    if switch:
        return "system" if switch == "1" else "pinned"
    return "system" if is_jetson(root) else "pinned"


def imported_version(name: str) -> str | None:
    """The version of the module this Python imports as pip knows it (its distribution's, e.g.
    2.14.1 where torch.__version__ says 2.14.1+cu130: a constraint with the local label would
    not match what is installed); the module's __version__ when no distribution of that name
    lies where the module does. None when it does not import."""
    try:
        module = importlib.import_module(name)
    except Exception:  # missing, or a broken install (a shared library that fails to load)
        return None
    return distribution_version(name, module) or str(module.__version__)


def distribution_version(name: str, module: ModuleType) -> str | None:
    """The version of the installed distribution `name` if it is the one `module` comes from."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    site = os.path.realpath(str(dist.locate_file("")))
    module_site = os.path.realpath(os.path.dirname(os.path.dirname(module.__file__ or "")))
    return dist.version if site == module_site else None


def torch_cuda() -> str | None:
    """The CUDA version the importable torch was built with; None for a CPU-only build."""
    import torch
    return torch.version.cuda


def constraints(root: str) -> tuple[list[str], list[str]]:
    """Constraint lines pinning this Python's torch and torchvision, and warnings for stderr;
    raises StopError when there is no torch to keep, or only a CPU-only one on a Jetson."""
    torch_version = imported_version("torch")
    if torch_version is None:
        raise StopError(f"{SWITCH}=1 or a Jetson: this Python ({sys.executable}) has no importable "
                        f"torch to keep; install JetPack's torch first ({README}), or unset "
                        f"{SWITCH} (0 on a Jetson) to install requirements/torch.txt")
    cuda = torch_cuda()
    if cuda is None and is_jetson(root):
        raise StopError(f"the torch this Python sees ({torch_version}) is a CPU-only build, which "
                        f"cannot use the Jetson's GPU; install JetPack's torch first ({README})")
    lines = [f"# kept by scripts/bootstrap.sh ({SWITCH}=1 or a Jetson): torch built for "
             f"{'CUDA ' + cuda if cuda else 'the CPU only'}", f"torch=={torch_version}"]
    warnings = [] if cuda else [f"warning: keeping torch {torch_version}, a CPU-only build: the "
                                "GPU will not be used (`tagclip doctor` checks)."]
    vision = imported_version("torchvision")
    if vision is None:
        warnings.append(f"warning: torchvision is not importable; pip will look for one built for "
                        f"torch {torch_version} and fail if there is none ({README}).")
    else:
        lines.append(f"torchvision=={vision}")
    return lines, warnings


def main(argv: list[str] | None = None) -> int:
    """Print the mode or the constraints; 1 with the reason on stderr when bootstrap must stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("mode", "constraints"))
    parser.add_argument("--root", default="/", help="file system root to look for a Jetson in")
    args = parser.parse_args(argv)
    try:
        if args.what == "mode":
            print(mode(args.root, os.environ.get(SWITCH)))
            return 0
        lines, warnings = constraints(args.root)
    except StopError as exc:
        print(f"{exc}.", file=sys.stderr)
        return 1
    for warning in warnings:
        print(warning, file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
