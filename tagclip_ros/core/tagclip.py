"""TagCLIP: training-free multi-label classification with a frozen CLIP (Lin et al., AAAI 2024).

Three steps, each a function here: coarse patch-level scores from a forward pass whose last
block attends only to itself; DMAR, which refines them with CLIP's own attention under an
attention-level and a class-level mask; and CWR, which re-checks every candidate class on a crop
of its region and averages the local and global scores. See ../shared/design/algorithm.md.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .boxes import box_mask, contour_boxes
from .loading import LoadedModel
from .profile import NO_TIMER, StageTimer
from .reduce import flat_mean, row_means
from .settings import TagClipSettings, default_cache_dir
from .tags import TagResult, relative_threshold_tags
from .text import TextFeatureCache
from .transform import prepare_image
from .vit import AttentionHook, VisionTower
from .vocab import Vocabulary, VocabularyStage

# Logit added where the class token of a CWR crop may not look (the official value).
OUTSIDE_REGION_PENALTY = -1000.0
# Tokens of one 720×1280 frame (ViT-B/16): the coarse pass of a batch of frames holds, per
# block, the attention maps of all of them at once, which `coarse_batches` keeps within this
# frame's (the largest the default max_input_side lets through): 8 frames of 480×640 per batch,
# 5 of 640×640, and larger frames one at a time.
COARSE_BATCH_TOKENS = 45 * 80 + 1


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


class TagClip(VocabularyStage):
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

    @torch.no_grad()
    def classify(self, rgb: np.ndarray, hook: AttentionHook | None = None,
                 timer: StageTimer = NO_TIMER) -> TagResult:
        """Tags and per-class scores for an RGB uint8 image (H, W, 3). `hook` also sees every
        block's attention (so CLIP-ES can reuse this forward pass); `timer` times the stages
        (preprocess, coarse, dmar, cwr). A batch of one (`classify_batch`): the same passes,
        the same numbers, one copy of the logic."""
        return self.classify_batch([rgb], [hook], timer)[0]

    @torch.no_grad()
    def classify_batch(self, rgbs: Sequence[np.ndarray],
                       hooks: Sequence[AttentionHook | None] | None = None,
                       timer: StageTimer = NO_TIMER) -> list[TagResult]:
        """`classify` of several RGB uint8 images (frames of several cameras) at once, each
        result equal to `classify(rgb)`'s for that frame, in the order given: the same tags,
        float32 scores to 1e-4 (on the CPU the coarse pass and DMAR come out bit for bit, and
        a crop's CWR score moves by ~1e-8 in a larger batch; test/core/test_batching.py).

        Frames of equal model-input size go through the coarse pass together as one batch
        (`coarse_batches`: frames of other sizes in batches of their own, and no batch whose
        attention maps outgrow one 1280×720 frame's); DMAR runs per frame; the CWR crops of
        all frames go through one batched forward. Fewer, larger passes pay where a frame
        alone leaves the device idle (CUDA); on the CPU they do not (`pipeline.batching_pays`).
        `hooks[i]`, if given, sees frame i's attention only, as `classify`'s hook does: every
        block's head-averaged map with batch dimension 1. The vocabulary is read once, so all
        frames are classified over the same one."""
        if hooks is None:
            hooks = [None] * len(rgbs)
        if len(hooks) != len(rgbs):
            raise ValueError(f"{len(hooks)} hooks for {len(rgbs)} images: give one per image (or None)")
        with self._lock:
            vocabulary, text = self._vocab_state
        patch = self.loaded.patch_size
        with timer.stage("preprocess"):
            pixels = [prepare_image(rgb, patch, self.settings.max_input_side).to(self.loaded.device)
                      for rgb in rgbs]
        grids = [(p.shape[-2] // patch, p.shape[-1] // patch) for p in pixels]
        refined: list[torch.Tensor | None] = [None] * len(rgbs)
        local: list[torch.Tensor | None] = [None] * len(rgbs)
        trunks: list[torch.Tensor | None] = [None] * len(rgbs)
        for batch in coarse_batches(grids):
            with timer.stage("coarse"):
                together = pixels[batch[0]] if len(batch) == 1 else torch.cat([pixels[i] for i in batch])
                coarse = self.coarse_scores_batch(together, text, [hooks[i] for i in batch])
            with timer.stage("dmar"):
                for i, (scores, affinity, trunk) in zip(batch, coarse):
                    refined[i] = dmar(scores, affinity, grids[i])
                    local[i] = refined[i][:, :len(vocabulary.classes)].max(dim=0).values
                    trunks[i] = trunk
        with timer.stage("cwr"):
            finals = self.reidentified_scores(pixels, refined, local, grids, text)
        return [TagResult(vocabulary, final, local[i].float().cpu().numpy(),
                          relative_threshold_tags(final, vocabulary.classes, self.settings.tag_threshold),
                          refined[i], grids[i], trunks[i])
                for i, final in enumerate(finals)]

    def reidentified_scores(self, pixels: Sequence[torch.Tensor], refined: Sequence[torch.Tensor],
                            local: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]],
                            text: torch.Tensor) -> list[np.ndarray]:
        """CWR of each frame: the final score per class, each candidate's local score averaged
        with the global score of its crop (weight `global_weight`), the others' left as they
        are. Each frame's refined map and local scores come off the device once; the crops of
        all frames go through one forward there, and their scores come back in one copy."""
        finals, frames = [], []
        for frame_pixels, frame_refined, frame_local, grid in zip(pixels, refined, local, grids):
            frame_refined, final = frame_refined.cpu(), frame_local.cpu().clone()
            finals.append(final)
            frames.append((frame_pixels, self.candidate_crops(frame_refined, final, grid)))
        w = self.settings.global_weight
        for final, (_, crops), scores in zip(finals, frames, self.reidentify_frames(frames, text)):
            for crop, score in zip(crops, scores):
                final[crop.index] = (1 - w) * final[crop.index] + w * score
        return [final.float().numpy() for final in finals]

    def coarse_scores(self, pixels: torch.Tensor, text: torch.Tensor,
                      hook: AttentionHook | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-patch class probabilities (patches, classes), the DMAR affinity (patches²), and
        the residual stream entering the last block (1, tokens, width), of one image (1, 3, H, W)."""
        return self.coarse_scores_batch(pixels, text, [hook])[0]

    def coarse_scores_batch(self, pixels: torch.Tensor, text: torch.Tensor,
                            hooks: Sequence[AttentionHook | None]
                            ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """`coarse_scores` of each image of a batch of equal-sized images (B, 3, H, W) from one
        pass: every block runs on the batch, and its attention is handed to each image's own
        vote (and `hooks[b]`) as that image's slice (batch dimension 1), so no image's DMAR
        sees another's attention. Each image's last-block input comes back as its own tensor."""
        votes = [AttentionVote(len(self.vision.blocks), self.settings.affinity_start) for _ in hooks]

        def each_frame(index: int, attention: torch.Tensor) -> None:
            for b, (vote, hook) in enumerate(zip(votes, hooks)):
                own = attention[b:b + 1]
                vote(index, own)
                if hook is not None:
                    hook(index, own)

        last = len(self.vision.blocks) - 1
        trunk = self.vision.run_blocks(self.vision.embed(pixels), range(last), each_frame)
        mask = self.vision.self_only_mask(trunk.shape[1])
        tokens = self.vision.project(self.vision.block(last, trunk, mask, each_frame))
        if len(votes) == 1:
            return [(self.class_probabilities(tokens[0].float()[1:], text),
                     votes[0].affinity(self.settings.vote_min_layers), trunk)]
        return [(self.class_probabilities(tokens[b].float()[1:], text),
                 vote.affinity(self.settings.vote_min_layers), trunk[b:b + 1].clone())
                for b, vote in enumerate(votes)]

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
        return self.reidentify_frames([(pixels, crops)], text)[0]

    def reidentify_frames(self, frames: Sequence[tuple[torch.Tensor, list[Crop]]],
                          text: torch.Tensor) -> list[list[float]]:
        """`reidentify` of several images' crops (pixels (1, 3, H, W) and crops per image), all
        images' crops in one batched forward; per image, its crops' probabilities in order."""
        counts = [len(crops) for _, crops in frames]
        if not sum(counts):
            return [[] for _ in frames]
        batch, masks = self.crop_batch(frames)
        tokens = self.vision.forward(batch, attn_mask=masks)
        probs = self.class_probabilities(tokens[:, 0], text)
        rows = torch.arange(sum(counts), device=probs.device)
        classes = torch.tensor([crop.index for _, crops in frames for crop in crops], device=probs.device)
        chosen = probs[rows, classes].cpu().tolist()
        starts = np.cumsum([0] + counts)
        return [chosen[start:start + count] for start, count in zip(starts, counts)]

    def crop_batch(self, frames: Sequence[tuple[torch.Tensor, list[Crop]]]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops of every image (pixels (1, 3, H, W) and its crops), in order, resized to
        the training resolution, and per-crop masks that let the class token see only the
        patches of the class region (built on the host, sent at once)."""
        size = self.loaded.image_size
        side = size // self.loaded.patch_size
        p = self.loaded.patch_size
        tokens = side * side + 1
        images, masks = [], torch.zeros(sum(len(crops) for _, crops in frames), 1, tokens, tokens)
        for pixels, crops in frames:
            for crop in crops:
                x0, y0, x1, y1 = crop.box
                cut = pixels[:, :, y0 * p:y1 * p, x0 * p:x1 * p]
                images.append(F.interpolate(cut, size=(size, size), mode="bilinear", align_corners=False))
                region = F.interpolate(crop.region[None, None].float(), size=(side, side), mode="nearest")
                outside = ~region.flatten().bool()
                masks[len(images) - 1, 0, 0, 1:] = outside.float() * OUTSIDE_REGION_PENALTY
        return torch.cat(images), masks.to(frames[0][0].device)


def coarse_batches(grids: Sequence[tuple[int, int]],
                   max_tokens: int = COARSE_BATCH_TOKENS) -> list[list[int]]:
    """Indices of frames (by their patch grids) that go through the coarse pass together:
    frames of equal grids, in order of first appearance, each batch of b frames of t tokens
    holding b·t² ≤ max_tokens² (its attention maps, heads × tokens² floats per frame and
    block, no larger than those of one frame of max_tokens tokens) and at least one frame."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, grid in enumerate(grids):
        groups.setdefault(tuple(grid), []).append(i)
    batches = []
    for (rows, cols), members in groups.items():
        tokens = rows * cols + 1
        size = max(1, max_tokens ** 2 // tokens ** 2)
        batches += [members[start:start + size] for start in range(0, len(members), size)]
    return batches
