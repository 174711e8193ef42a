"""The `~/tag_image` service (tagclip_ros/srv/TagImage): one image tagged now, with a vocabulary
of the request's, by the node's model, without touching the node's vocabulary or topics.

The work runs on the inference thread between frames (`LatestFrameWorker.call_soon`), never at
the same time as a frame. The callback is a coroutine in a callback group of its own: it awaits
that result while the executor goes on serving frames, parameters and lifecycle transitions.
What a request means and the Perceptions that answer it are core/queries.py's; here only the
messages in and out.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future

from ..core.pipeline import Perceived, Perception
from ..core.queries import QueryPerceptions, query_profile
from ..srv import TagImage
from . import conversions
from .params import overrides_from

NOT_ACTIVE = "the node is not active: activate it (lifecycle) and ask again"
CLEANED_UP = "the node was cleaned up before the request's turn"


class TagImageService:
    """Serves `~/tag_image` for `node`, which has `active`, `worker` (a LatestFrameWorker or
    None) and `perception` (None once cleaned up); `values` gives its parameters' values."""

    def __init__(self, node: Node, values: Callable[[], dict[str, Any]]) -> None:
        self.node = node
        self._values = values
        self._queries: QueryPerceptions | None = None
        self._pending: set[Future] = set()
        self._lock = threading.Lock()  # _pending: the executor's thread vs. the inference thread
        node.create_service(TagImage, "~/tag_image", self._serve,
                            callback_group=ReentrantCallbackGroup())

    async def _serve(self, request: TagImage.Request, response: TagImage.Response) -> TagImage.Response:
        worker = self.node.worker
        if not (self.node.active and worker is not None):
            return failure(NOT_ACTIVE)
        values = self._values()  # as of now: changes accepted before run before this request
        future = Future()
        with self._lock:
            self._pending.add(future)
        worker.call_soon(lambda: self._finish(future, self._answer(request, values)))
        return await future

    def _finish(self, future: Future, response: TagImage.Response) -> None:
        """Hand `response` to the waiting callback (unless `release` answered it already)."""
        with self._lock:
            if future not in self._pending:
                return
            self._pending.discard(future)
        self._resolve(future, response)

    def _resolve(self, future: Future, response: TagImage.Response) -> None:
        future.set_result(response)
        executor = self.node.executor
        if executor is not None:
            executor.wake()  # the callback resumes now, not at the executor's next event

    def _answer(self, request: TagImage.Request, values: dict[str, Any]) -> TagImage.Response:
        """The response to `request` (on the inference thread): tags, and the mask if asked,
        or success false with the reason."""
        perception = self.node.perception
        if perception is None:
            return failure(CLEANED_UP)
        try:
            rgb = conversions.image_to_rgb(request.image)
            profile = query_profile(request.vocabulary, request.background,
                                    values["vocabulary"], values["background"])
            chosen = self._queries_for(perception).perception(profile, *overrides_from(values))
            method = values["segmentation.method"] if request.want_mask else None
            return answer(chosen, chosen.run(rgb, method), request.image.header)
        except ValueError as exc:  # the image (FrameError) or the names: the sentence says which
            return failure(str(exc))
        except Exception as exc:  # noqa: BLE001 - the client gets an answer, the node runs on
            self.node.get_logger().error(f"tag_image failed: {type(exc).__name__}: {exc}")
            return failure(f"{type(exc).__name__}: {exc}")

    def _queries_for(self, perception: Perception) -> QueryPerceptions:
        """The request Perceptions built from the node's current one (anew after a configure)."""
        queries = self._queries
        if queries is None or queries.base is not perception:
            queries = QueryPerceptions(perception)
            if self.node.perception is perception:  # not kept past a cleanup
                self._queries = queries
        return queries

    def release(self) -> None:
        """Drop the request Perceptions (they hold the model), and answer the requests still
        waiting: the inference thread that would have run them has stopped."""
        self._queries = None
        with self._lock:
            pending, self._pending = self._pending, set()
        for future in pending:
            self._resolve(future, failure(CLEANED_UP))


def answer(perception: Perception, perceived: Perceived, header) -> TagImage.Response:
    """A successful response: the tags, the label mask when one was made, and the label map of
    `perception`'s vocabulary, all with the request image's header."""
    vocabulary = perceived.tags.vocabulary
    response = TagImage.Response(success=True, tags=conversions.tag_array(perceived.tags, header),
                                 label_info=conversions.label_info(
                                     vocabulary, perception.tagger.settings.tag_threshold, header))
    if perceived.segmentation is not None:
        response.label_mask = conversions.mask_to_image(perceived.segmentation.mask, header,
                                                        len(vocabulary.classes))
    return response


def failure(reason: str) -> TagImage.Response:
    return TagImage.Response(success=False, message=reason)
