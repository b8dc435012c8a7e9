"""Pages of the directory's users matching a filter, in index (= creation) order. Pure.

A filter is a predicate over indexes 1..count. Building a `Selection` evaluates it once per
index and keeps only a running match count every CHUNK indexes (about 16 KB for a million
users), so any page, however deep, costs one binary search and a scan of at most one chunk
plus the page. Users removed or kicked after the build are passed in as `excluded` (sorted
indexes that match the predicate) and subtracted, so those changes need no rebuild.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Sequence

CHUNK = 256


class Selection:
    def __init__(self, count: int, predicate: Callable[[int], bool] | None) -> None:
        self.count = count
        self._predicate = predicate
        self._prefix: array[int] | None = None
        if predicate is None:
            self.matched = count
            return
        prefix = array("q", [0])
        matched = 0
        for start in range(1, count + 1, CHUNK):
            for index in range(start, min(start + CHUNK, count + 1)):
                if predicate(index):
                    matched += 1
            prefix.append(matched)
        self._prefix = prefix
        self.matched = matched

    def total(self, excluded: Sequence[int]) -> int:
        return self.matched - len(excluded)

    def _matched_through(self, chunk: int) -> int:
        """Matches among indexes 1..chunk*CHUNK."""
        if self._prefix is None:
            return min(chunk * CHUNK, self.count)
        return self._prefix[chunk]

    def page(
        self, offset: int, limit: int, excluded: Sequence[int], *, descending: bool = False
    ) -> list[int]:
        """Indexes at ranks [offset, offset + limit) of the matches not excluded."""
        total = self.total(excluded)
        if offset >= total or limit <= 0:
            return []
        if not descending:
            return self._ascending(offset, min(limit, total - offset), excluded)
        first = max(0, total - offset - limit)
        return self._ascending(first, total - offset - first, excluded)[::-1]

    def _ascending(self, offset: int, limit: int, excluded: Sequence[int]) -> list[int]:
        # The last chunk boundary whose count of kept matches is <= offset.
        chunks = (self.count + CHUNK - 1) // CHUNK
        low, high = 0, chunks
        while low < high:
            middle = (low + high + 1) // 2
            boundary = middle * CHUNK
            kept = self._matched_through(middle) - bisect.bisect_right(excluded, boundary)
            if kept <= offset:
                low = middle
            else:
                high = middle - 1
        boundary = low * CHUNK
        rank = self._matched_through(low) - bisect.bisect_right(excluded, boundary)
        skip = frozenset(excluded)
        predicate = self._predicate
        found: list[int] = []
        for index in range(boundary + 1, self.count + 1):
            if index in skip or (predicate is not None and not predicate(index)):
                continue
            if rank >= offset:
                found.append(index)
                if len(found) == limit:
                    break
            rank += 1
        return found
