"""TagCLIP: training-free multi-label classification with a frozen CLIP (Lin et al., AAAI 2024).

Three steps, each a function here: coarse patch-level scores from a forward pass whose last
block attends only to itself; DMAR, which refines them with CLIP's own attention under an
attention-level and a class-level mask; and CWR, which re-checks every candidate class on a crop
of its region and averages the local and global scores. See ../shared/design/algorithm.md.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .boxes import box_mask, contour_boxes
from .image import DEFAULT_MAX_INPUT_SIDE, check_max_side, prepare_image
from .loading import LoadedModel
from .profile import NO_TIMER, StageTimer
from .reduce import flat_mean, row_means
from .text import TextFeatureCache, default_cache_dir
from .vit import AttentionHook, VisionTower
from .vocab import Vocabulary

# Logit added where the class token of a CWR crop may not look (the official value).
OUTSIDE_REGION_PENALTY = -1000.0


@dataclass(frozen=True)
class TagClipSettings:
    """The algorithm's knobs; defaults are the paper's VOC/COCO settings."""

    tag_threshold: float = 0.5        # relative threshold that turns final scores into tags
    candidate_threshold: float = 0.5  # relative threshold for CWR candidates (COCO-Stuff: 0.1)
    vote_min_layers: int = 4          # attention-level mask: entries above mean in ≥ this many blocks
    affinity_start: int = -4          # affinity = mean attention of blocks[affinity_start:-1]
    global_weight: float = 0.5        # weight of the CWR (global) score in the final score
    skip_degenerate: bool = False     # official CWR stops at the first empty box; True skips it only
    templates: str | tuple[str, ...] = "tagclip"
    max_input_side: int | None = DEFAULT_MAX_INPUT_SIDE  # larger images are downscaled; None: never

    def __post_init__(self) -> None:
        for name in ("tag_threshold", "candidate_threshold", "global_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], not {value}")
        check_max_side(self.max_input_side)


@dataclass(frozen=True)
class Tag:
    """A reported class: `index` into the vocabulary, its label and final score."""

    index: int
    label: str
    score: float

    @property
    def class_id(self) -> int:
        """Id used in label masks and messages: 0 is background, vocabulary entry i is i + 1."""
        return self.index + 1


@dataclass
class TagResult:
    """Everything TagCLIP computed for one image."""

    vocabulary: Vocabulary
    scores: np.ndarray        # final score per foreground class, vocabulary order
    local_scores: np.ndarray  # DMAR score per foreground class
    tags: list[Tag]           # classes above the relative threshold, best first
    refined: torch.Tensor = field(repr=False)  # DMAR map (patches, all classes)
    grid: tuple[int, int] = (0, 0)             # patch grid (rows, cols)
    last_block_input: torch.Tensor | None = field(default=None, repr=False)  # (1, tokens, width)


def relative_threshold_tags(scores: np.ndarray, labels: tuple[str, ...], factor: float) -> list[Tag]:
    """Classes scoring above min + factor·(max − min), best first; the top class if none does."""
    threshold = scores.min() + factor * (scores.max() - scores.min())
    chosen = np.flatnonzero(scores > threshold)
    if chosen.size == 0:
        chosen = np.array([int(np.argmax(scores))])
    chosen = sorted(chosen, key=lambda i: -scores[i])
    return [Tag(int(i), labels[i], float(scores[i])) for i in chosen]


class AttentionVote:
    """Collects, block by block, what DMAR needs from the attention maps: how many blocks put
    each patch pair above their mean, and the sum over the affinity blocks."""

    def __init__(self, blocks: int, affinity_start: int) -> None:
        self.affinity_blocks = range(blocks)[affinity_start:-1]
        self.votes: torch.Tensor | None = None
        self.affinity_sum: torch.Tensor | None = None

    def __call__(self, index: int, attention: torch.Tensor) -> None:
        patches = attention[0, 1:, 1:].float()
        above = patches > flat_mean(patches)
        self.votes = above.to(torch.uint8) if self.votes is None else self.votes + above
        if index in self.affinity_blocks:
            self.affinity_sum = patches if self.affinity_sum is None else self.affinity_sum + patches

    def affinity(self, min_votes: int) -> torch.Tensor:
        """Mean affinity-block attention, kept only where enough blocks voted."""
        mean = self.affinity_sum / len(self.affinity_blocks)
        return mean * (self.votes >= min_votes).float()


def min_max(columns: torch.Tensor) -> torch.Tensor:
    """Each column shifted to start at 0 and divided by its new maximum."""
    shifted = columns - columns.min(dim=0, keepdim=True).values
    return shifted / shifted.max(dim=0, keepdim=True).values


def dmar(coarse: torch.Tensor, affinity: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Refine coarse patch scores (patches, classes) with attention affinity and, per class
    with any positive score, a box mask around its high-scoring region.

    The refined map is thresholded downstream (CWR candidates, crop boxes), so each class's
    masked product is one matrix-vector product, as in the official code: a single batched
    product sums in another order (differences of ~1e-8). The cost is one pass over the
    affinity per class. The boxes are found on the host from one copy of the maps, and their
    masks go to the device in one piece: no transfer per class."""
    refined = affinity @ coarse
    normalised = min_max(refined)
    means = row_means(normalised.T).cpu().numpy()  # each class's mean, as the official sums it
    maps = normalised.cpu().numpy().reshape(grid[0], grid[1], -1)
    positive = (refined.max(dim=0).values > 0).cpu().numpy()
    classes = [c for c in np.flatnonzero(positive) if np.isfinite(means[c])]  # constant: unmasked
    out = refined.clone()
    if not classes:
        return out
    masks = np.stack([box_mask(grid, contour_boxes(maps[:, :, c], float(means[c]))).reshape(-1)
                      for c in classes], axis=1)
    masks = torch.from_numpy(masks).to(coarse)
    for i, c in enumerate(classes):
        out[:, c:c + 1] = affinity @ (masks[:, i:i + 1] * coarse[:, c:c + 1])
    return out


@dataclass
class Crop:
    """One CWR candidate: its class, patch box (end-exclusive) and region mask in that box."""

    index: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in patches
    region: torch.Tensor            # bool (y1 - y0, x1 - x0)


def region_box(column: torch.Tensor, grid: tuple[int, int]) -> Crop | None:
    """Box around patches whose min-max normalised score exceeds 0.5, with the official
    clamp of the end to the last-but-one row/column; None when the box is empty. `column` is
    a host tensor (CWR copies the refined map off the device once for all classes)."""
    region = (min_max(column[:, None])[:, 0] > 0.5).reshape(grid)
    rows = torch.nonzero(region.any(dim=1)).flatten()
    cols = torch.nonzero(region.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    y0, y1 = int(rows[0]), min(int(rows[-1]) + 1, grid[0] - 1)
    x0, x1 = int(cols[0]), min(int(cols[-1]) + 1, grid[1] - 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return Crop(-1, (x0, y0, x1, y1), region[y0:y1, x0:x1])


class TagClip:
    """A TagCLIP classifier over a vocabulary that can be swapped while it runs."""

    def __init__(self, loaded: LoadedModel, vocabulary: Vocabulary,
                 settings: TagClipSettings = TagClipSettings(),
                 text_cache: TextFeatureCache | None = None) -> None:
        self.loaded = loaded
        self.settings = settings
        self.vision = VisionTower(loaded)
        self.text_cache = text_cache or TextFeatureCache(loaded, default_cache_dir())
        self._lock = threading.Lock()
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Use `vocabulary` from the next image on; only names not yet cached are encoded."""
        features = self.text_cache.features(vocabulary.all_names, self.settings.templates)
        with self._lock:
            self._vocab_state = (vocabulary, features)

    def sharing(self, vocabulary: Vocabulary, settings: TagClipSettings) -> TagClip:
        """A classifier over `vocabulary` with `settings` that computes with this one's model,
        vision tower and text cache (no copy, no second compile): run the two only one at a
        time, as the tower's working memory is shared."""
        other = copy.copy(self)
        other.settings = settings
        other._lock = threading.Lock()
        other.set_vocabulary(vocabulary)
        return other

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocab_state[0]

    @torch.no_grad()
    def classify(self, rgb: np.ndarray, hook: AttentionHook | None = None,
                 timer: StageTimer = NO_TIMER) -> TagResult:
        """Tags and per-class scores for an RGB uint8 image (H, W, 3). `hook` also sees every
        block's attention (so CLIP-ES can reuse this forward pass); `timer` times the stages
        (preprocess, coarse, dmar, cwr)."""
        with self._lock:
            vocabulary, text = self._vocab_state
        with timer.stage("preprocess"):
            pixels = prepare_image(rgb, self.loaded.patch_size,
                                   self.settings.max_input_side).to(self.loaded.device)
        grid = (pixels.shape[-2] // self.loaded.patch_size, pixels.shape[-1] // self.loaded.patch_size)
        with timer.stage("coarse"):
            coarse, affinity, trunk = self.coarse_scores(pixels, text, hook)
        with timer.stage("dmar"):
            refined = dmar(coarse, affinity, grid)
            local = refined[:, :len(vocabulary.classes)].max(dim=0).values
        with timer.stage("cwr"):
            final = self.reidentified_scores(pixels, refined, local, grid, text)
        tags = relative_threshold_tags(final, vocabulary.classes, self.settings.tag_threshold)
        return TagResult(vocabulary, final, local.float().cpu().numpy(), tags, refined, grid, trunk)

    def reidentified_scores(self, pixels: torch.Tensor, refined: torch.Tensor, local: torch.Tensor,
                            grid: tuple[int, int], text: torch.Tensor) -> np.ndarray:
        """CWR: the final score per class, each candidate's local score averaged with the
        global score of its crop (weight `global_weight`), the others' left as they are.
        The refined map and local scores come off the device once; the crops' forward runs
        there, and its scores come back in one copy."""
        refined, final = refined.cpu(), local.cpu().clone()
        crops = self.candidate_crops(refined, final, grid)
        if crops:
            global_scores = self.reidentify(pixels, crops, text)
            w = self.settings.global_weight
            for crop, score in zip(crops, global_scores):
                final[crop.index] = (1 - w) * final[crop.index] + w * score
        return final.float().numpy()

    def coarse_scores(self, pixels: torch.Tensor, text: torch.Tensor,
                      hook: AttentionHook | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-patch class probabilities (patches, classes), the DMAR affinity (patches²), and
        the residual stream entering the last block (1, tokens, width)."""
        vote = AttentionVote(len(self.vision.blocks), self.settings.affinity_start)
        both = vote if hook is None else (lambda i, a: (vote(i, a), hook(i, a)))
        last = len(self.vision.blocks) - 1
        trunk = self.vision.run_blocks(self.vision.embed(pixels), range(last), both)
        mask = self.vision.self_only_mask(trunk.shape[1])
        tokens = self.vision.project(self.vision.block(last, trunk, mask, both))[0].float()
        probs = self.class_probabilities(tokens[1:], text)
        return probs, vote.affinity(self.settings.vote_min_layers), trunk

    def class_probabilities(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Softmax over classes of CLIP's scaled cosine similarity, one row per feature."""
        features = features.float() / features.float().norm(dim=-1, keepdim=True)
        logits = self.loaded.model.logit_scale.exp().float() * features @ text.T
        return logits.softmax(dim=-1)

    def candidate_crops(self, refined: torch.Tensor, local: torch.Tensor,
                        grid: tuple[int, int]) -> list[Crop]:
        """CWR candidates in class order, each with its crop box, until the first empty box
        (or, with skip_degenerate, skipping empty boxes)."""
        low, high = refined.min(), refined.max()
        threshold = low + self.settings.candidate_threshold * (high - low)
        crops = []
        for index in torch.nonzero(local > threshold).flatten().tolist():
            crop = region_box(refined[:, index], grid)
            if crop is None:
                if self.settings.skip_degenerate:
                    continue
                break
            crop.index = index
            crops.append(crop)
        return crops

    def reidentify(self, pixels: torch.Tensor, crops: list[Crop], text: torch.Tensor) -> list[float]:
        """Global probability of each crop's class, all crops in one batched forward."""
        batch, masks = self.crop_batch(pixels, crops)
        tokens = self.vision.forward(batch, attn_mask=masks)
        probs = self.class_probabilities(tokens[:, 0], text)
        rows = torch.arange(len(crops), device=probs.device)
        chosen = probs[rows, torch.tensor([crop.index for crop in crops], device=probs.device)]
        return chosen.cpu().tolist()

    def crop_batch(self, pixels: torch.Tensor, crops: list[Crop]) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops resized to the training resolution, and per-crop masks that let the class
        token see only the patches of the class region (built on the host, sent at once)."""
        size = self.loaded.image_size
        side = size // self.loaded.patch_size
        p = self.loaded.patch_size
        tokens = side * side + 1
        images, masks = [], torch.zeros(len(crops), 1, tokens, tokens)
        for i, crop in enumerate(crops):
            x0, y0, x1, y1 = crop.box
            cut = pixels[:, :, y0 * p:y1 * p, x0 * p:x1 * p]
            images.append(F.interpolate(cut, size=(size, size), mode="bilinear", align_corners=False))
            region = F.interpolate(crop.region[None, None].float(), size=(side, side), mode="nearest")
            outside = ~region.flatten().bool()
            masks[i, 0, 0, 1:] = outside.float() * OUTSIDE_REGION_PENALTY
        return torch.cat(images), masks.to(pixels.device)
