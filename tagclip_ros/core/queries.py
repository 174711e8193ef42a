"""On-demand queries: one image tagged with a vocabulary of the request's, beside a stream's own.

The node's `~/tag_image` service asks "what of these classes is in this image?" without
changing the vocabulary its topics use. A request's names are read by the rule of the node's
`vocabulary` parameter (`dataset_profiles.select_profile`) and checked as any vocabulary is
(`vocab.validate_names`: no blank or repeated names, at most MAX_CLASSES of each list). The
Perception that answers shares the node's models, vision towers and text caches
(`Perception.sharing`); the last QUERY_VOCABULARIES of them are kept, so a vocabulary asked for
again costs no text encoding, and the text features of request vocabularies take a bounded
amount of memory (the shared caches do not keep them: `TextFeatureCache.transient`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from .dataset_profiles import CUSTOM, DatasetProfile, select_profile
from .pipeline import Perception, profile_settings
from .vocab import Vocabulary, validate_names

# Request vocabularies whose Perceptions (and so text features) are kept: up to
# 8 × (1000 + 1000 names) × 2 prompt sets of 512 floats (~65 MB) with ViT-B/16.
QUERY_VOCABULARIES = 8


def query_profile(vocabulary: Sequence[str], background: Sequence[str],
                  node_vocabulary: Sequence[str], node_background: Sequence[str]
                  ) -> DatasetProfile | None:
    """The profile a request asks for, or None for the node's own (both lists empty).
    `vocabulary` reads as the node's `vocabulary` parameter does (a profile's name, `=name`
    for one class, or the classes); empty, it is the node's. `background` replaces the
    profile's background names; empty, it is the profile's or, for a list of classes, the
    node's `background` parameter (what the node would score beside them). ValueError with
    one sentence for names that cannot be used."""
    if not vocabulary and not background:
        return None
    validate_names(list(vocabulary), "vocabulary", allow_empty=True)
    validate_names(list(background), "background", allow_empty=True)
    profile = select_profile(list(vocabulary or node_vocabulary), list(background or node_background))
    if background and profile.name != CUSTOM:
        own = profile.vocabulary
        profile = profile.with_vocabulary(Vocabulary(own.classes, tuple(background),
                                                     own.segmentation_names))
    return profile


class QueryPerceptions:
    """Perceptions for request profiles, sharing `base`'s models and text caches; the last
    `size` are kept (least recently used dropped first). Use them where `base` runs, one at a
    time (the node: on its inference thread)."""

    def __init__(self, base: Perception, size: int = QUERY_VOCABULARIES) -> None:
        self.base = base
        self.size = size
        self._kept: OrderedDict[Hashable, Perception] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def perception(self, profile: DatasetProfile | None, tag_overrides: dict | None = None,
                   segmentation_overrides: dict | None = None) -> Perception:
        """The Perception for `profile` with these overrides of its settings (as
        `Perception.for_profile` takes them); `base` itself for None."""
        if profile is None:
            return self.base
        tag, segmentation = profile_settings(profile, tag_overrides, segmentation_overrides)
        vocabulary = profile.vocabulary
        key = (vocabulary.classes, vocabulary.background,
               tuple(sorted(vocabulary.segmentation_names.items())), tag, segmentation)
        found = self._kept.pop(key, None)
        if found is None:
            with self.base.tagger.text_cache.transient(), self.base.segmenter.text_cache.transient():
                found = self.base.sharing(vocabulary, tag, segmentation)
        self._kept[key] = found
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return found
