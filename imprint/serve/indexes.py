"""Per-collection retrieval indexes, opened on first use and kept in an LRU next to the modules' one.

A workspace may hold thousands of small collections (one per person); opening every index at start-up would cost
time and memory for collections nobody asks about. An index is opened (and synced to its collection's current
documents) the first time a request needs it, reopened when that collection's corpus version changed (a document
added or removed through the CLI while the server runs), and closed when more than `capacity` are open. Like the
module cache, it lives on the scheduler's worker thread: retrieval runs there.
"""

from __future__ import annotations

from collections import OrderedDict

from imprint.retrieval import Retriever


class IndexCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.loaded: OrderedDict[str, tuple[str, Retriever]] = OrderedDict()  # least recently used first
        self.loads = 0
        self.evictions = 0

    def get(self, ws, collection: str, pinned: frozenset[str] = frozenset()) -> Retriever | None:
        """The index of `collection`, in step with its documents; None when it has none. Indexes in `pinned` (the
        others one request searches) are not closed to make room: the cache may then hold more than `capacity`."""
        version = ws.corpus_version(collection)
        entry = self.loaded.get(collection)
        if entry is not None and entry[0] == version:
            self.loaded.move_to_end(collection)
            return entry[1]
        if entry is not None:
            self._close(collection)
        if not ws.has_collection(collection):
            return None
        for victim in [c for c in self.loaded if c not in pinned]:
            if len(self.loaded) < self.capacity:
                break
            self._close(victim)
            self.evictions += 1
        retriever = Retriever.open(ws, collection=collection)
        self.loads += 1
        self.loaded[collection] = (version, retriever)
        return retriever

    def _close(self, collection: str) -> None:
        _, retriever = self.loaded.pop(collection)
        retriever.close()

    def snapshot(self) -> dict:
        return {"capacity": self.capacity, "open": len(self.loaded), "loads": self.loads, "evictions": self.evictions}
