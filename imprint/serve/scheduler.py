"""The dynamic batcher: requests queue up, one worker thread takes as many as fit a batch, loads their modules and
decodes them together.

After the first request of a batch arrives the worker waits at most `batch_window_ms` for more (no wait at all
when requests piled up while the previous batch ran), takes whole requests until `max_batch` sequences, makes sure
their modules are loaded (LRU, pinned while the batch runs), then decodes base, LoRA and prefix rows in one batch
and each full fine-tune's rows in a batch on its own model. Batches are static: a request that arrives while a
batch decodes waits for the next one, but rows that finish leave the running batch at once.

Results and streamed text go back through callbacks the HTTP layer gives (they run on this thread and must only
hand the data over to the event loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imprint.serve.config import ServeConfig
from imprint.serve.engine import Row, generate
from imprint.serve.modules import ModuleCache, ModuleTooLarge

log = logging.getLogger("imprint.serve")


class QueueFull(Exception):
    """The server-wide queue is at `max_queue`: the request should be retried later (429)."""


@dataclass(frozen=True)
class ModuleRef:
    """A module version resolved from the workspace: what the worker needs to load it."""

    key: str  # name@version
    method: str
    directory: Path


@dataclass(eq=False)
class Job:
    """One request's sequences (`n` choices), its module (None: the bare base model) and its completion callback,
    called once on the worker thread with None or the exception that failed it.

    A job with a `task` has no rows: the worker calls `task(model)` between batches with a model that applies the
    module to every row, and keeps what it returns in `result` (used for answers through `imprint.answer`)."""

    rows: list[Row]
    module: ModuleRef | None
    done: Callable[[BaseException | None], None]
    task: Callable | None = None
    result: object = None
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self._completed = False
        for row in self.rows:
            row.cancelled = lambda: self.cancelled

    def complete(self, exc: BaseException | None) -> None:
        """Report the outcome, once (a later call, e.g. after a worker-level failure, is ignored)."""
        if not self._completed:
            self._completed = True
            self.done(exc)


class Scheduler:
    def __init__(self, cache: ModuleCache, tokenizer, config: ServeConfig):
        self.cache = cache
        self.tokenizer = tokenizer
        self.config = config
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.running = True
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "mixed_batches": 0, "max_modules": 0, "errors": 0}
        self.thread = threading.Thread(target=self._work, name="imprint-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cond:
            if not self.running:
                raise QueueFull("the server is shutting down")
            if len(self.queue) >= self.config.max_queue:
                raise QueueFull(f"{len(self.queue)} requests are waiting; retry shortly")
            self.queue.append(job)
            self.cond.notify()

    def close(self, timeout: float = 30.0) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()
        self.thread.join(timeout)

    def _collect(self) -> list[Job]:
        """Block for the next batch of whole jobs, at most `max_batch` sequences (always at least one job)."""
        with self.cond:
            while self.running and not self.queue:
                self.cond.wait()
            if not self.running:
                return []
            deadline = self.queue[0].arrived + self.config.batch_window_ms / 1000
            while self.running and sum(len(j.rows) for j in self.queue) < self.config.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            jobs, size = [], 0
            while self.queue and (not jobs or size + max(1, len(self.queue[0].rows)) <= self.config.max_batch):
                job = self.queue.popleft()
                if job.cancelled:  # its client left while it waited
                    for row in job.rows:
                        row.finish_reason = "cancelled"
                    job.complete(None)
                    continue
                jobs.append(job)
                size += max(1, len(job.rows))
            return jobs

    def _requeue(self, jobs: list[Job]) -> None:
        with self.cond:
            self.queue.extendleft(reversed(jobs))

    def _work(self) -> None:
        while self.running:
            jobs = self._collect()
            if not jobs:
                continue
            try:
                self._run(jobs)
            except Exception as exc:  # never let one bad batch kill the worker: fail its requests instead
                log.exception("batch failed")
                self.stats["errors"] += 1
                for job in jobs:
                    job.complete(exc)

    def _run(self, jobs: list[Job]) -> None:
        deferred: list[Job] = []
        groups: dict[str, list[Job]] = {"": []}  # "" is the shared model; full fine-tunes by module key
        tasks: list[tuple[Job, object]] = []
        pinned: set[str] = set()
        for job in jobs:
            if job.module is None:
                if job.task:
                    tasks.append((job, None))
                else:
                    groups[""].append(job)
                continue
            try:
                loaded = self.cache.get(job.module.key, job.module.method, job.module.directory, pinned)
            except ModuleTooLarge as exc:
                if exc.fits_alone:  # not next to this batch's modules: run it in a later batch
                    deferred.append(job)
                else:
                    job.complete(exc)
                continue
            except Exception as exc:  # an unreadable module file fails its own requests only
                log.exception("cannot load module %s", job.module.key)
                job.complete(exc)
                continue
            pinned.add(loaded.key)
            if job.task:
                tasks.append((job, loaded))
                continue
            for row in job.rows:
                row.adapter = loaded.adapter or row.adapter
                row.prefix = loaded.prefix
            groups.setdefault(loaded.key if loaded.model is not None else "", []).append(job)
        if deferred:
            self._requeue(deferred)
        for job, loaded in tasks:
            try:
                with self.cache.exclusive(loaded) as model:
                    job.result = job.task(model)
            except Exception as exc:
                log.exception("answer failed")
                job.complete(exc)
                continue
            job.complete(None)
        for key, group in groups.items():
            if not group:
                continue
            model = self.cache.loaded[key].model if key else self.cache.shared_model
            rows = [row for job in group for row in job.rows]
            try:
                generate(model, self.tokenizer, rows, router=None if key else self.cache.router)
            except Exception as exc:
                log.exception("generation failed")
                self.stats["errors"] += 1
                for job in group:
                    job.complete(exc)
                continue
            self._count(group, rows)
            for job in group:
                job.complete(None)

    def _count(self, group: list[Job], rows: list[Row]) -> None:
        modules = len({job.module.key if job.module else "" for job in group})
        s = self.stats
        s["batches"] += 1
        s["rows"] += len(rows)
        s["max_rows"] = max(s["max_rows"], len(rows))
        s["mixed_batches"] += modules > 1
        s["max_modules"] = max(s["max_modules"], modules)
