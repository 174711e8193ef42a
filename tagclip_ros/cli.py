"""`tagclip`: the command line for TagCLIP tagging, segmentation, datasets and pictures.

Every verb loads the model through the same core the ROS node uses. Errors a user can fix are
printed as one sentence; images that cannot be read are reported and skipped, and the exit code
says whether anything failed. The dataset verbs (tag, segment) resume: images whose outputs
exist are skipped unless --overwrite.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from .core import (ImageError, LoadedModel, TagClip, TagClipSettings, TagResult, TextFeatureCache,
                   Vocabulary, WeightsError, default_cache_dir, load_model, load_vocabulary,
                   read_image)
from .core import dataset, metrics
from .core.crf import CrfSettings, CrfUnavailableError, crf_label_mask, require_crf
from .core.dataset import SplitEntry
from .core.image import image_files
from .core.overlay import render_overlay
from .core.pipeline import SEGMENTATION_METHODS, Perception
from .core.segment import ClipEsSegmenter, Segmentation, SegmentationSettings, dmar_segment

PROGRESS_MIN_IMAGES = 5
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
T = TypeVar("T")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every verb that needs a model and a vocabulary."""
    group = parser.add_argument_group("model")
    group.add_argument("--weights", help="local checkpoint (OpenAI .pt, state dict or open_clip)")
    group.add_argument("--model", default="ViT-B-16", help="open_clip architecture name")
    group.add_argument("--pretrained", default="openai", help="open_clip pretrained tag")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    group.add_argument("--cache-dir", default=default_cache_dir(),
                       help="text-feature cache folder ('' keeps it in memory only)")
    vocab = parser.add_argument_group("vocabulary")
    vocab.add_argument("--vocab", default="voc", help="voc, coco, a names file, or 'a,b,c'")
    vocab.add_argument("--background", default=None,
                       help="background names (voc, coco, file or 'a,b'); default: the vocabulary's")
    vocab.add_argument("--threshold", type=float, default=0.5, help="relative tag threshold")


def load_model_from(args: argparse.Namespace) -> tuple[LoadedModel, TextFeatureCache]:
    """The model and its text-feature cache from parsed arguments (raises WeightsError)."""
    loaded = load_model(args.model, args.pretrained, args.weights, args.device, args.precision)
    return loaded, TextFeatureCache(loaded, args.cache_dir or None)


def build_classifier(args: argparse.Namespace, vocabulary: Vocabulary | None = None) -> TagClip:
    """Model, vocabulary and TagCLIP from parsed arguments (raises ValueError/WeightsError)."""
    vocabulary = vocabulary or load_vocabulary(args.vocab, args.background)
    loaded, cache = load_model_from(args)
    return TagClip(loaded, vocabulary, TagClipSettings(tag_threshold=args.threshold), cache)


def expand_images(paths: Sequence[str]) -> list[str]:
    """Image paths, with folders replaced by the image files they hold (sorted)."""
    result = []
    for path in paths:
        if os.path.isdir(path):
            result += image_files(path)
        else:
            result.append(path)
    return result


def progress(items: Sequence[T], what: str) -> Iterator[T]:
    """Iterate with a progress bar on stderr when there are many items."""
    return iter(tqdm(items, desc=what, unit="img", disable=len(items) < PROGRESS_MIN_IMAGES,
                     file=sys.stderr))


def report(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    tqdm.write(message, file=sys.stderr)


def report_skipped(skipped: int, total: int, where: str) -> None:
    """Say how many images a resumed run leaves alone, and how to redo them."""
    if skipped:
        report(f"{skipped} of {total} images already done in {where}; skipping them "
               f"(--overwrite redoes them)")


def finish(failed: int, total: int, what: str = "could not be read") -> int:
    """The exit code of a run over `total` images of which `failed` failed, said on stderr."""
    if failed:
        print(f"{failed} of {total} images {what}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def read_each(items: Sequence[T], path_of: Callable[[T], str], what: str,
              failures: list[str]) -> Iterator[tuple[T, np.ndarray]]:
    """(item, RGB image) for every item whose image reads, with a progress bar; the others
    are reported, skipped and added to `failures`."""
    for item in progress(items, what):
        try:
            rgb = read_image(path_of(item))
        except ImageError as exc:
            failures.append(str(exc))
            report(f"skipping {exc}")
            continue
        yield item, rgb


def classify_each(classifier: TagClip, items: Sequence[T], path_of: Callable[[T], str], what: str,
                  failures: list[str]) -> Iterator[tuple[T, TagResult]]:
    """(item, TagCLIP result) for every item whose image reads (see `read_each`)."""
    for item, rgb in read_each(items, path_of, what, failures):
        yield item, classifier.classify(rgb)


def cmd_classify(args: argparse.Namespace) -> int:
    classifier = build_classifier(args)
    images = expand_images(args.images)
    results, failures = [], []
    for path, result in classify_each(classifier, images, str, "classify", failures):
        tags = ", ".join(f"{t.label} {t.score:.4f}" for t in result.tags)
        tqdm.write(f"{path}: {tags}")
        results.append({"image": path, "scores": [float(s) for s in result.scores],
                        "tags": [{"label": t.label, "score": t.score} for t in result.tags]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"classes": list(classifier.vocabulary.classes), "results": results}, f, indent=1)
    return finish(len(failures), len(images))


# ---------------------------------------------------------------------------------------------
# tag: a tag file for a split or a set of images


def tag_inputs(args: argparse.Namespace, num_classes: int) -> list[tuple[SplitEntry, str]]:
    """(entry, image path) for every image to tag: the split's lines, or the given images."""
    if args.split and args.images:
        raise ValueError("give either --split (with --img-root) or image paths, not both")
    if args.split:
        if not args.img_root:
            raise ValueError("--split needs --img-root, the folder that holds <stem>" + args.ext)
        entries = dataset.read_split(args.split, num_classes)
        return [(e, dataset.image_path(args.img_root, e.stem, args.ext)) for e in entries]
    if args.eval:
        raise ValueError("--eval needs --split: the split file's label ids are the ground truth")
    paths = expand_images(args.images)
    if not paths:
        raise ValueError("no images: give --split FILE --img-root DIR, or image files or folders")
    return list(zip(dataset.stems_of(paths), paths))


def resume_tag_file(path: str, num_classes: int) -> tuple[dict, dict]:
    """Tags and scores of an earlier run into `path`, rewritten cleanly (an unfinished last
    line dropped) so that this run can append to them."""
    tags, partial = dataset.read_progress(path, num_classes)
    scores = dataset.read_scores(dataset.scores_path(path))
    if partial:
        report(f"{path}: dropping an unfinished last line left by an interrupted run")
    if tags or partial:
        dataset.write_tag_file(path, tags)
        dataset.write_scores(dataset.scores_path(path), scores)
    return tags, scores


def tag_images(classifier: TagClip, todo: list[tuple[SplitEntry, str]], out: str,
               tags: dict, scores: dict) -> int:
    """Tag each image, appending its line to the tag file (and its scores beside it) as soon
    as it is done; fills `tags` and `scores`, returns how many images failed."""
    failures: list[str] = []
    with open(out, "a", encoding="utf-8") as tag_file, \
            open(dataset.scores_path(out), "a", encoding="utf-8") as score_file:
        for (entry, _), result in classify_each(classifier, todo, lambda item: item[1], "tag", failures):
            ids = sorted(t.index for t in result.tags)
            dataset.append_line(tag_file, dataset.format_tag_line(entry.stem, ids))
            dataset.append_line(score_file, dataset.scores_line(entry.stem, result.scores))
            tags[entry.stem], scores[entry.stem] = tuple(ids), list(map(float, result.scores))
    return len(failures)


def cmd_tag(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocab, args.background)
    inputs = tag_inputs(args, len(vocabulary.classes))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    old_tags, old_scores = resume_tag_file(args.out, len(vocabulary.classes))
    todo, skipped = dataset.split_done(inputs, lambda item: item[0].stem in old_tags,
                                       args.overwrite)
    report_skipped(skipped, len(inputs), args.out)
    new_tags: dict = {}
    new_scores: dict = {}
    failed = 0
    if todo:
        failed = tag_images(build_classifier(args, vocabulary), todo, args.out, new_tags, new_scores)
    order = [e.stem for e, _ in inputs]
    tags = dataset.merge_in_order(order, new_tags, old_tags)
    scores = dataset.merge_in_order(order, new_scores, old_scores)
    dataset.write_tag_file(args.out, tags)
    dataset.write_scores(dataset.scores_path(args.out), scores)
    print(f"{args.out}: tagged {len(new_tags)} images, {skipped} already tagged")
    if args.eval:
        evaluate_tags([e for e, _ in inputs], scores, vocabulary, args.threshold)
    return finish(failed, len(inputs))


def evaluate_tags(entries: list[SplitEntry], scores: dict, vocabulary: Vocabulary,
                  factor: float) -> None:
    """Print mAP and F1/P/R at the relative threshold (official protocols) with per-class
    tables, over the images of `entries` that have scores."""
    have = [e for e in entries if e.stem in scores and len(scores[e.stem]) == len(vocabulary.classes)]
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


# ---------------------------------------------------------------------------------------------
# segment: label masks (and CAMs) for the tags of a tag file

Segmenter = Callable[[np.ndarray, list[int]], Segmentation]


def build_segmenter(args: argparse.Namespace, vocabulary: Vocabulary,
                    settings: SegmentationSettings) -> Segmenter:
    """A function (rgb, class ids) → Segmentation by the chosen method. CLIP-ES needs no
    TagCLIP (and so no 85-template text features); DMAR classifies to get its maps."""
    loaded, cache = load_model_from(args)
    if args.method == "clipes":
        return ClipEsSegmenter(loaded, vocabulary, settings, cache).segment
    tagger = TagClip(loaded, vocabulary, TagClipSettings(tag_threshold=args.threshold), cache)
    return lambda rgb, ids: dmar_segment(tagger.classify(rgb), rgb.shape[:2], settings, ids)


def segment_image(rgb: np.ndarray, ids: list[int], segmenter: Segmenter,
                  args: argparse.Namespace, settings: SegmentationSettings) -> tuple[np.ndarray, np.ndarray]:
    """(label mask, refined CAMs) of one image; no tags give an all-background mask and no
    CAMs (documented behaviour: the image is not skipped, so evaluation sees it)."""
    if not ids:
        return np.zeros(rgb.shape[:2], np.uint16), np.zeros((0, *rgb.shape[:2]), np.float32)
    result = segmenter(rgb, ids)
    mask = result.mask
    if args.crf:
        crf = CrfSettings(official_colour_wrap=args.crf_colours == "official")
        mask = crf_label_mask(rgb, result.cams, result.class_indices, settings.background_power, crf)
    return mask, result.cams


def segment_inputs(args: argparse.Namespace, num_classes: int) -> list[SplitEntry]:
    """The tag file's entries; ValueError when no line has a tag (a plain split of stems
    would otherwise give all-background masks without complaint)."""
    entries = dataset.read_split(args.split, num_classes)
    if not any(e.labels for e in entries):
        raise ValueError(f"{args.split} has no class ids on any line; segment reads tags in the "
                         f"'stem id id ...' format, e.g. the file `tagclip tag` writes")
    return entries


def cmd_segment(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocab, args.background)
    dataset.check_mask_classes(len(vocabulary.classes))
    if args.crf:
        require_crf()
    entries = segment_inputs(args, len(vocabulary.classes))

    def outputs(entry: SplitEntry) -> list[str]:
        return dataset.segment_outputs(args.out, entry.stem, args.save_cams)

    todo, skipped = dataset.split_done(entries, lambda e: all(map(os.path.exists, outputs(e))),
                                       args.overwrite)
    report_skipped(skipped, len(entries), args.out)
    settings = SegmentationSettings()
    segmenter = build_segmenter(args, vocabulary, settings) if todo else None
    failures: list[str] = []
    for entry, rgb in read_each(todo, lambda e: dataset.image_path(args.img_root, e.stem, args.ext),
                                "segment", failures):
        if not entry.labels:
            report(f"{entry.stem}: no tags on line {entry.line}; writing an all-background mask")
        mask, cams = segment_image(rgb, list(entry.labels), segmenter, args, settings)
        paths = outputs(entry)
        if args.save_cams:
            dataset.save_cams(paths[1], entry.labels, cams)
        dataset.save_label_png(paths[0], mask)
    print(f"{args.out}: segmented {len(todo) - len(failures)} images, {skipped} already done")
    return finish(len(failures), len(entries))


# ---------------------------------------------------------------------------------------------
# evaluate-masks: mIoU of label-mask PNGs against ground truth


def mask_stems(args: argparse.Namespace) -> list[str]:
    """The images to evaluate: the split's stems, or every PNG in the prediction folder."""
    if args.split:
        return [e.stem for e in dataset.read_split(args.split)]
    stems = sorted(f[:-len(".png")] for f in os.listdir(args.pred) if f.endswith(".png"))
    if not stems:
        raise ValueError(f"{args.pred} holds no .png masks")
    return stems


def add_mask_pair(matrix: metrics.ConfusionMatrix, pred_path: str, gt_path: str) -> str | None:
    """Add one prediction and its ground truth to `matrix`; the reason if they cannot be used."""
    for path in (pred_path, gt_path):
        if not os.path.isfile(path):
            return f"{path}: no such file"
    try:
        pred, gt = dataset.load_label_png(pred_path), dataset.load_label_png(gt_path)
    except (OSError, ValueError) as exc:
        return str(exc)
    if pred.shape != gt.shape:
        return (f"{pred_path}: mask is {pred.shape[1]}x{pred.shape[0]} pixels but its ground "
                f"truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
    try:
        matrix.update(pred, gt)
    except ValueError as exc:
        return f"{pred_path}: {exc}"
    return None


def cmd_evaluate_masks(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocab, "")
    names = ("background", *vocabulary.classes)
    matrix = metrics.ConfusionMatrix(len(names), dataset.IGNORE_LABEL)
    stems = mask_stems(args)
    failed = 0
    for stem in progress(stems, "evaluate"):
        problem = add_mask_pair(matrix, os.path.join(args.pred, stem + ".png"),
                                os.path.join(args.gt, stem + ".png"))
        if problem:
            failed += 1
            report(f"skipping {problem}")
    if failed == len(stems):
        print(f"error: none of the {len(stems)} masks could be evaluated", file=sys.stderr)
        return EXIT_SOME_FAILED
    miou = matrix.miou()
    print(metrics.format_table(names, {"IoU": matrix.iou()}, {"IoU": miou}))
    evaluated = len(stems) - failed
    print(f"mIoU {100 * miou:.2f} on {evaluated} image{'s' if evaluated != 1 else ''} "
          f"(classes absent from the ground truth are left out of the mean)")
    return finish(failed, len(stems), "could not be evaluated")


# ---------------------------------------------------------------------------------------------
# overlay: pictures of tags and masks


def cmd_overlay(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(args.vocab, args.background)
    images = expand_images(args.images)
    stems = dataset.stems_of(images)
    loaded, cache = load_model_from(args)
    perception = Perception(loaded, vocabulary, TagClipSettings(tag_threshold=args.threshold),
                            text_cache=cache)
    failures: list[str] = []
    for (path, entry), rgb in read_each(list(zip(images, stems)), lambda item: item[0],
                                        "overlay", failures):
        perceived = perception.run(rgb, args.method)
        captions = [(t.class_id, f"{t.label} {t.score:.2f}") for t in perceived.tags.tags]
        out = os.path.join(args.out, f"{entry.stem}_overlay.png")
        dataset.save_rgb_png(out, render_overlay(rgb, perceived.segmentation.mask, captions))
        tqdm.write(f"{path}: {', '.join(c for _, c in captions)} -> {out}")
    return finish(len(failures), len(images))


# ---------------------------------------------------------------------------------------------
# the parser


def add_split_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """--split, --img-root and --ext: images named by a split file's stems."""
    parser.add_argument("--split", required=required,
                        help="split/tag file: one 'stem [id id ...]' per line (ids 0-based)")
    parser.add_argument("--img-root", required=required, help="folder of <stem><ext> images")
    parser.add_argument("--ext", default=".jpg", help="image file extension (default .jpg)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images whose outputs exist (default: skip them, resuming)")


def add_dataset_verbs(verbs: argparse._SubParsersAction) -> None:
    """The tag, segment, evaluate-masks and overlay verbs."""
    tag = verbs.add_parser(
        "tag", help="write a tag file ('stem id id ...') for a split or images",
        description="Tags every image into a tag file in the official classify.py format "
                    "('stem id id ...', 0-based ids in ascending order; the top class when none "
                    "passes the threshold), each line appended as soon as the image is done, "
                    "and each image's scores to OUT.scores.jsonl (what --eval ranks). Images "
                    "already in OUT are skipped unless --overwrite, so a killed run resumes.")
    tag.add_argument("images", nargs="*", help="image files or folders (instead of --split)")
    add_split_arguments(tag, required=False)
    tag.add_argument("--out", required=True, help="tag file to write (resumed if it exists)")
    tag.add_argument("--eval", action="store_true",
                     help="mAP and F1/P/R against the split's label ids, with per-class tables")
    add_model_arguments(tag)
    tag.set_defaults(run=cmd_tag)

    segment = verbs.add_parser(
        "segment", help="label-mask PNGs for the tags of a tag file",
        description="Writes OUT/<stem>.png (palette PNG: 0 background, class id + 1) for the "
                    "tags on each line of the tag file (e.g. from `tagclip tag`). A line "
                    "without tags gets an all-background mask (and, with --save-cams, a CAM "
                    "file with no maps), so evaluation still counts it. Images whose outputs "
                    "exist are skipped unless --overwrite.")
    add_split_arguments(segment, required=True)
    segment.add_argument("--out", required=True, help="folder for <stem>.png (and .npy)")
    segment.add_argument("--save-cams", action="store_true",
                         help="also write <stem>.npy: {'keys': class ids, 'cams': float16 maps}")
    segment.add_argument("--method", default="clipes", choices=SEGMENTATION_METHODS)
    segment.add_argument("--crf", action="store_true", help="dense CRF on the masks (paper's +CRF)")
    segment.add_argument("--crf-colours", default="official", choices=("official", "rgb"),
                         help="image the CRF compares: the official wrapped mean-subtracted "
                              "one (default, the paper's numbers) or plain RGB")
    add_model_arguments(segment)
    segment.set_defaults(run=cmd_segment)

    evaluate = verbs.add_parser("evaluate-masks", help="mIoU of label-mask PNGs against ground truth")
    evaluate.add_argument("--pred", required=True, help="folder of predicted <stem>.png")
    evaluate.add_argument("--gt", required=True,
                          help="folder of ground-truth <stem>.png (0 background, id+1, 255 ignore)")
    evaluate.add_argument("--vocab", default="voc", help="voc, coco, a names file, or 'a,b,c'")
    evaluate.add_argument("--split", help="evaluate these stems (default: every PNG in --pred)")
    evaluate.set_defaults(run=cmd_evaluate_masks)

    overlay = verbs.add_parser("overlay", help="pictures: masks and tags drawn on the images")
    overlay.add_argument("images", nargs="+", help="image files or folders")
    overlay.add_argument("--out", required=True, help="folder for <stem>_overlay.png")
    overlay.add_argument("--method", default="clipes", choices=SEGMENTATION_METHODS)
    add_model_arguments(overlay)
    overlay.set_defaults(run=cmd_overlay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagclip", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    classify = verbs.add_parser("classify", help="print the tags of images")
    classify.add_argument("images", nargs="+", help="image files or folders")
    classify.add_argument("--json", help="write scores and tags to this JSON file")
    add_model_arguments(classify)
    classify.set_defaults(run=cmd_classify)
    add_dataset_verbs(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "images") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.images += extra  # image paths given after the options
    try:
        return args.run(args)
    except (WeightsError, ValueError, OSError, CrfUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
