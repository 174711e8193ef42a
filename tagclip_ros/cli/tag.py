"""`tagclip tag`: a tag file in the official format for a split or a set of images (resumable),
with the paper's metrics."""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..core import dataset, metrics
from ..core.dataset import SplitEntry
from ..core.dataset_profiles import DatasetProfile
from ..core.tags import TagResult
from . import ray_jobs
from .common import (add_model_arguments, add_split_arguments, build_classifier, classify_each,
                     expand_images, finish, profile_from, report, report_skipped, tag_settings)

if TYPE_CHECKING:
    from ..core.tagclip import TagClip

HELP = "write a tag file ('stem id id ...') for a split or images"
DESCRIPTION = ("Tags every image into a tag file in the official classify.py format "
               "('stem id id ...', 0-based ids in ascending order; the top class when none "
               "passes the threshold), each line appended as soon as the image is done, "
               "and each image's scores to OUT.scores.jsonl (what --eval ranks). Images "
               "with whole lines in both are skipped unless --overwrite, so a killed run "
               "resumes.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", help="image files or folders (instead of --split)")
    add_split_arguments(parser, required=False)
    parser.add_argument("--out", required=True, help="tag file to write (resumed if it exists)")
    parser.add_argument("--eval", action="store_true",
                        help="mAP and F1/P/R against the split's label ids, with per-class tables "
                             "(cocostuff: 0-based 182-ids, mapped to its 171 classes)")
    add_model_arguments(parser)
    ray_jobs.add_ray_arguments(parser)


def tag_inputs(args: argparse.Namespace, num_ids: int) -> list[tuple[SplitEntry, str]]:
    """(entry, image path) for every image to tag: the split's lines (ids below `num_ids`), or
    the given images."""
    if args.split and args.images:
        raise ValueError("give either --split (with --img-root) or image paths, not both")
    if args.split:
        if not args.img_root:
            raise ValueError("--split needs --img-root, the folder that holds <stem>" + args.ext)
        entries = dataset.read_split(args.split, num_ids)
        return [(e, dataset.image_path(args.img_root, e.stem, args.ext)) for e in entries]
    if args.eval:
        raise ValueError("--eval needs --split: the split file's label ids are the ground truth")
    paths = expand_images(args.images)
    if not paths:
        raise ValueError("no images: give --split FILE --img-root DIR, or image files or folders")
    return list(zip(dataset.stems_of(paths), paths))


def resume_tag_file(path: str, num_classes: int) -> tuple[dict, dict]:
    """Tags and scores of an earlier run into `path`, both files rewritten cleanly (unfinished
    last lines dropped, temporaries of a killed rewrite removed) so that this run can append
    whole lines to them."""
    score_path = dataset.scores_path(path)
    dataset.remove_stale_partials([path, score_path])
    tags, partial = dataset.read_progress(path, num_classes)
    scores = dataset.read_scores(score_path, num_classes)
    if partial:
        report(f"{path}: dropping an unfinished last line left by an interrupted run")
    if os.path.exists(path) or os.path.exists(score_path):
        dataset.write_tag_file(path, tags)
        dataset.write_scores(score_path, scores)
    return tags, scores


def tagged(stem: str, tags: dict, scores: dict) -> bool:
    """Whether an earlier run finished this image: its tag line and its scores line are both
    whole (a run killed between the two appends redoes the image)."""
    return stem in tags and stem in scores


def tag_ids(result: TagResult) -> list[int]:
    """The class ids of a tag line: the result's tags, ascending."""
    return sorted(t.index for t in result.tags)


def tag_images(classifier: TagClip, todo: list[tuple[SplitEntry, str]], failures: list[str]
               ) -> Iterator[tuple[tuple[SplitEntry, str], list[int], Sequence[float]]]:
    """(item, tag ids, scores) of each image of `todo` tagged in this process."""
    for item, result in classify_each(classifier, todo, lambda item: item[1], "tag", failures):
        yield item, tag_ids(result), result.scores


def tag_images_on_ray(args: argparse.Namespace, todo: list[tuple[SplitEntry, str]], failures: list[str]
                      ) -> Iterator[tuple[tuple[SplitEntry, str], list[int], Sequence[float]]]:
    """What `tag_images` gives, from workers on a Ray cluster (--ray), as they finish; the first
    image downscaled for the model is said, as one process says it."""
    noted = False
    results = ray_jobs.run_each("tag", args, todo, lambda item: (os.path.abspath(item[1]),), failures)
    for item, (ids, scores, note) in results:
        if note and not noted:
            report(f"note: {note} (--max-input-side)")
            noted = True
        yield item, ids, scores


def write_tags(results: Iterable[tuple[tuple[SplitEntry, str], list[int], Sequence[float]]], out: str,
               tags: dict, scores: dict) -> None:
    """Append each image's line to the tag file (and its scores beside it) as soon as it is
    done; fills `tags` and `scores`."""
    with open(out, "a", encoding="utf-8") as tag_file, \
            open(dataset.scores_path(out), "a", encoding="utf-8") as score_file:
        for (entry, _), ids, image_scores in results:
            dataset.append_line(tag_file, dataset.format_tag_line(entry.stem, ids))
            dataset.append_line(score_file, dataset.scores_line(entry.stem, image_scores))
            tags[entry.stem], scores[entry.stem] = tuple(ids), list(map(float, image_scores))


def run(args: argparse.Namespace) -> int:
    ray_jobs.check_ray_arguments(args)
    profile = profile_from(args)
    num_classes = len(profile.vocabulary.classes)
    inputs = tag_inputs(args, profile.gt_tag_ids or num_classes)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    old_tags, old_scores = resume_tag_file(args.out, num_classes)
    todo, skipped = dataset.split_done(
        inputs, lambda item: tagged(item[0].stem, old_tags, old_scores), args.overwrite)
    report_skipped(skipped, len(inputs), args.out)
    new_tags: dict = {}
    new_scores: dict = {}
    failures: list[str] = []
    if todo:
        results = (tag_images_on_ray(args, todo, failures) if args.ray else
                   tag_images(build_classifier(args, profile), todo, failures))
        write_tags(results, args.out, new_tags, new_scores)
    order = [e.stem for e, _ in inputs]
    tags = dataset.merge_in_order(order, new_tags, old_tags)
    scores = dataset.merge_in_order(order, new_scores, old_scores)
    dataset.write_tag_file(args.out, tags)
    dataset.write_scores(dataset.scores_path(args.out), scores)
    print(f"{args.out}: tagged {len(new_tags)} images, {skipped} already tagged")
    if args.eval:
        evaluate_tags([e for e, _ in inputs], scores, profile, tag_settings(args, profile).tag_threshold)
    return finish(len(failures), len(inputs))


def evaluate_tags(entries: list[SplitEntry], scores: dict, profile: DatasetProfile,
                  factor: float) -> None:
    """Print mAP and F1/P/R at the relative threshold (official protocols) with per-class
    tables, over the images of `entries` that have scores; the entries' ids are the profile's
    ground-truth ids (COCO-Stuff's 182-ids become its 171 classes)."""
    vocabulary = profile.vocabulary
    have = [dataclasses.replace(e, labels=tuple(profile.tag_ground_truth(e.labels)))
            for e in entries if e.stem in scores and len(scores[e.stem]) == len(vocabulary.classes)]
    if len(have) < len(entries):
        report(f"evaluating {len(have)} of {len(entries)} images: the others have no scores "
               f"for this vocabulary (unreadable, or tagged by another run: --overwrite redoes them)")
    if not have:
        return
    matrix = np.array([scores[e.stem] for e in have])
    labels = dataset.label_matrix(have, len(vocabulary.classes))
    ap = metrics.average_precision(matrix, labels)
    official = metrics.mean_average_precision(matrix, labels, empty="zero")
    present = metrics.mean_average_precision(matrix, labels, empty="skip")
    f1, precision, recall = metrics.f1_precision_recall(matrix, labels, factor)
    per_class = metrics.per_class_precision_recall(
        metrics.relative_threshold_predictions(matrix, factor), labels)
    print(metrics.format_table(vocabulary.classes, {"AP": ap, **per_class},
                               {"AP": official, "F1": f1, "P": precision, "R": recall}))
    print(f"mean row: mAP with classes without positives counted as 0 (official); F1/P/R "
          f"pooled over all images and classes at relative threshold {factor}")
    print(f"mAP {100 * official:.2f} (over classes with positives: {100 * present:.2f})  "
          f"F1 {100 * f1:.2f}  P {100 * precision:.2f}  R {100 * recall:.2f}  on {len(have)} images")
