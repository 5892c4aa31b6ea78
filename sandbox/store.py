"""In-memory state of one sandbox app: what each image id was asked for, plus PNG cache.

Both maps are bounded so a long benchmark cannot grow the process without limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sandbox.render import ImageSpec, render

DEFAULT_MAX_PROMPTS = 10_000
DEFAULT_MAX_CACHED_PNGS = 64


class ImageStore:
    """Remembers image id -> what it shows and caches rendered PNG bytes (both LRU-bounded)."""

    def __init__(
        self,
        max_prompts: int = DEFAULT_MAX_PROMPTS,
        max_cached_pngs: int = DEFAULT_MAX_CACHED_PNGS,
    ) -> None:
        self._max_prompts = max_prompts
        self._max_pngs = max_cached_pngs
        self._prompts: OrderedDict[str, ImageSpec] = OrderedDict()
        self._pngs: OrderedDict[str, bytes] = OrderedDict()
        # The image route runs in a worker thread (rendering is CPU-bound), the conversation
        # route on the event loop; one lock keeps the ordered dicts consistent.
        self._lock = threading.Lock()

    def remember(self, prompt: str | ImageSpec) -> str:
        """Record an image (a prompt: the default request) and return its id."""
        spec = ImageSpec(prompt) if isinstance(prompt, str) else prompt
        key = spec.key
        with self._lock:
            self._prompts[key] = spec
            self._prompts.move_to_end(key)
            while len(self._prompts) > self._max_prompts:
                self._prompts.popitem(last=False)
        return key

    def png(self, key: str) -> bytes | None:
        """Return the PNG for a known image id (rendered once, then cached), else None."""
        with self._lock:
            spec = self._prompts.get(key)
            if spec is None:
                return None
            cached = self._pngs.get(key)
            if cached is not None:
                self._pngs.move_to_end(key)
                return cached
        # Render outside the lock so concurrent requests for other images are not serialised.
        data = render(spec)
        with self._lock:
            self._pngs[key] = data
            self._pngs.move_to_end(key)
            while len(self._pngs) > self._max_pngs:
                self._pngs.popitem(last=False)
        return data
