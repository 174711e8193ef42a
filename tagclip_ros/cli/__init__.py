"""`tagclip`: the command line for TagCLIP tagging, segmentation, datasets, pictures and bags.

A thin entry point, as ros2cli's: each verb is a module of this package with `HELP`, an
optional `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> exit code`. Every verb loads
the model through the same core the ROS node uses. Errors a user can fix are printed as one
sentence; inputs that cannot be read are reported and skipped, and the exit code says whether
anything failed. The dataset verbs (tag, segment) resume: images whose outputs exist are
skipped unless --overwrite.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2  # a usage error or a missing package (here, not in .common, which needs the core)

# verb name → module of this package
VERBS = {"classify": "classify", "tag": "tag", "segment": "segment",
         "evaluate-masks": "evaluate_masks", "overlay": "overlay", "bag": "bag",
         "doctor": "doctor"}


def build_parser() -> argparse.ArgumentParser:
    """The parser with one sub-parser per verb module."""
    parser = argparse.ArgumentParser(prog="tagclip", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, module_name in VERBS.items():
        try:
            module = importlib.import_module(f".{module_name}", __name__)
        except ModuleNotFoundError as exc:  # e.g. cv2: `doctor` must still run and say so
            sub = verbs.add_parser(name, help=f"(unavailable: {exc.name} is not installed)")
            sub.set_defaults(run=missing_package(name, exc.name), usage_error=sub.error)
            sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        sub = verbs.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", None))
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, usage_error=sub.error)  # a wrong flag: the verb's usage
    return parser


def missing_package(verb: str, module: str | None) -> Callable[[argparse.Namespace], int]:
    """The `run` of a verb that needs a module which is not installed: one sentence saying
    what to do."""
    def run(args: argparse.Namespace) -> int:
        print(f"error: tagclip {verb} needs the Python module {module!r}, which is not installed: "
              "install requirements/core.txt (scripts/bootstrap.sh does), or, on a machine without "
              "network, its wheels as docs/gpu.md says; `tagclip doctor` lists what is "
              "missing.", file=sys.stderr)
        return EXIT_USAGE
    return run


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a user can fix, printed as one sentence."""
    from ..core.errors import CrfUnavailableError, WeightsError
    return WeightsError, ValueError, OSError, CrfUnavailableError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; the exit code is 0, 1 (some inputs failed) or 2 (a usage error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "images") or any(e.startswith("-") for e in extra)):
        args.usage_error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.images += extra  # image paths given after the options
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:  # open_clip, torch: the verbs import them once they need them
        return missing_package(args.verb, exc.name)(args)
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
