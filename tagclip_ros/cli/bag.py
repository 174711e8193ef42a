"""`tagclip bag`: tag a recorded rosbag2 offline, into a copy that also holds the node's outputs."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from tqdm import tqdm

from ..core.depth import DEFAULT_MAX_DELAY
from ..core.settings import SEGMENTATION_METHODS
from ..core.temporal import ENABLED_HELP, SETTING_HELP, TemporalSettings
from .common import EXIT_SOME_FAILED, add_model_arguments, build_perception, profile_from, report

HELP = "tag the image topics of a rosbag2 (mcap or sqlite3) into a copy of it"
DESCRIPTION = ("Writes OUT, a rosbag2 in IN's storage format holding every message of IN "
               "unchanged plus, for each image topic (sensor_msgs/Image or CompressedImage), "
               "in its namespace (/robot/cam/image_raw -> /robot/cam/...): tags, "
               "classification, label_mask and detections (unless --no-masks), label_info "
               "and, with --overlay, overlay; each with its image's header and log time. Frames that "
               "cannot be decoded are reported (topic, log time, reason), counted and skipped "
               "(exit code 1). With --depth and --camera-info, also detections_3d of the colour "
               "topic, each frame paired with the depth image nearest its stamp (within "
               f"{DEFAULT_MAX_DELAY:g} s) "
               "as the node does; a frame whose depth cannot serve it is reported, without it. "
               "With --temporal, each topic's tags are the node's stable tags (temporal.*).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", metavar="IN", help="input rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--out", required=True, help="output rosbag2 folder")
    parser.add_argument("--topic", action="append", dest="topics", metavar="T",
                        help="image topic to tag (repeatable; default: every image topic)")
    parser.add_argument("--no-masks", action="store_true", help="tags only, no label_mask")
    parser.add_argument("--method", default="clipes", choices=SEGMENTATION_METHODS,
                        help="label-mask method (default clipes, the paper's)")
    parser.add_argument("--overlay", action="store_true", help="also write overlay pictures")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--depth", metavar="TOPIC", help="depth image topic registered to the "
                        "colour topic (16UC1/mono16 mm, 32FC1 m): also write detections_3d")
    parser.add_argument("--camera-info", metavar="TOPIC",
                        help="the colour camera's CameraInfo topic (with --depth)")
    parser.add_argument("--temporal", action="store_true",
                        help=ENABLED_HELP + " (the node's temporal.enabled), per image topic")
    for name, text in SETTING_HELP.items():
        default = getattr(TemporalSettings, name)
        parser.add_argument(f"--temporal-{name.replace('_', '-')}", type=temporal_setting(name),
                            metavar="N" if isinstance(default, int) else "X",
                            help=f"with --temporal: {text} (default {default:g})")
    add_model_arguments(parser)


def temporal_setting(name: str) -> Callable[[str], float]:
    """The option type of the stable-tags setting `name`, in range by TemporalSettings' rule."""
    kind = type(getattr(TemporalSettings, name))

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        try:
            TemporalSettings(**{name: value})
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    return parse


def temporal_from(args: argparse.Namespace) -> TemporalSettings | None:
    """The stable-tags settings asked for, or None without --temporal (ValueError, one
    sentence, for a --temporal-* option without it)."""
    given = {name: value for name in SETTING_HELP
             if (value := getattr(args, f"temporal_{name}")) is not None}
    if not args.temporal:
        if given:
            option = "--temporal-" + next(iter(given)).replace("_", "-")
            raise ValueError(f"{option} applies only with --temporal (stable tags)")
        return None
    return TemporalSettings(**given)


def check_paths(args: argparse.Namespace) -> None:
    """ValueError (one sentence) for a missing IN or an OUT that may not be replaced."""
    if not os.path.exists(args.bag):
        raise ValueError(f"{args.bag}: no such bag")
    if os.path.abspath(args.bag) == os.path.abspath(args.out):
        raise ValueError("--out must differ from the input bag")
    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"{args.out} exists; choose another --out or pass --overwrite")


def check_depth(args: argparse.Namespace) -> None:
    """ValueError (one sentence) for --depth options that cannot give detections_3d."""
    if bool(args.depth) != bool(args.camera_info):
        raise ValueError("--depth and --camera-info go together: detections_3d need both")
    if args.depth and args.no_masks:
        raise ValueError("--depth needs label masks (detections_3d are of their regions), not --no-masks")


def run(args: argparse.Namespace) -> int:
    profile = profile_from(args)  # a bad vocabulary is said before anything is read or loaded
    check_paths(args)
    check_depth(args)
    temporal = temporal_from(args)
    try:
        from ..node.bag_depth import DepthTopics
        from ..node.bags import BagError, BagOptions, BagTagger
    except ImportError as exc:
        raise ValueError(f"tagclip bag needs ROS 2 Python and this package's messages ({exc}); "
                         "source your ROS 2 workspace, or `. scripts/ros_env.sh .venv install`") from None
    perception = build_perception(args, profile)
    options = BagOptions(None if args.no_masks else args.method, args.overlay, args.topics,
                         depth=DepthTopics(args.depth, args.camera_info) if args.depth else None,
                         temporal=temporal)
    bars: list[tqdm] = []  # made once the image topics are known, so errors come alone

    def on_start(total: int) -> None:
        bars.append(tqdm(total=total, desc="bag", unit="frame"))

    def on_frame(bad: str | None) -> None:
        bars[0].update()
        if bad:
            report(f"skipping frame: {bad}")
    try:
        result = BagTagger(perception, options).run(args.bag, args.out, on_start, on_frame)
    except BagError as exc:
        raise ValueError(str(exc)) from None
    finally:
        for bar in bars:
            bar.close()
    for reason in result.no_3d:
        report(f"no detections_3d for {reason}")
    without = f", {len(result.no_3d)} without detections_3d" if args.depth else ""
    print(f"{args.out}: tagged {result.frames} frames, {len(result.bad)} bad{without}")
    if result.bad:
        report(f"{len(result.bad)} of {result.frames + len(result.bad)} frames could not be "
               "decoded and were skipped")
        return EXIT_SOME_FAILED
    return 0
