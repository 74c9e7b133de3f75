"""The batcher: requests queue up and one worker thread decodes them with continuous batching.

When nothing is decoding, the worker waits for a request and then at most `batch_window_ms` for more; while
batches are decoding, it takes whatever arrived between two steps. New requests' modules are loaded (LRU, pinned
while their rows decode), their rows are prefilled and join a running batch, and every batch makes one decode
step per round; rows leave the moment they finish. Base, LoRA and prefix rows share one batch on the shared
model; each full fine-tune's rows form a batch on its own model copy. A request that cannot join yet (the batch
is full, or its cache grew past the sliding window) waits for rows to leave.

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
from typing import Protocol

from imprint.errors import ImprintError
from imprint.inference import Batch, Row
from imprint.serve.config import ServeConfig
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
    collection: str = "default"  # what it was trained on: who may use it, where its retrieval searches


@dataclass(eq=False)
class Job:
    """One request's sequences (`n` choices), its module (None: the bare base model) and its completion callback,
    called once on the worker thread with None or the exception that failed it."""

    rows: list[Row]
    module: ModuleRef | None
    done: Callable[[BaseException | None], None]
    cancelled: bool = False
    batch: str | None = None  # the batch its rows decode in ("" is the shared model)
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


class Engine(Protocol):
    """Where a server's rows are decoded (`Service.engine`): the local `Scheduler` below, or a `VllmEngine` that
    forwards them to a vLLM server (`imprint.serve.vllm_engine`). Both fill the rows (`Row.push`, so the answer rule
    and stop strings apply the same way) and call each job's `done` from their own thread."""

    stats: dict

    def submit(self, job: Job) -> None: ...  # queue the job's rows; QueueFull when the server is saturated

    def close(self) -> None: ...

    def modules(self) -> dict: ...  # what is loaded, for /v1/imprint/stats: {"loaded": [{"module": key, ...}], ...}

    def refuses(self, module: ModuleRef) -> str | None: ...  # why this engine cannot serve the module (None: it can)


class Scheduler:
    def __init__(self, cache: ModuleCache, tokenizer, config: ServeConfig):
        self.cache = cache
        self.tokenizer = tokenizer
        self.config = config
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.running = True
        self.batches: dict[str, Batch] = {}  # "" is the shared model; full fine-tunes by module key
        self.active: list[Job] = []  # jobs whose rows are decoding
        self.stats = {"steps": 0, "prefills": 0, "rows": 0, "row_steps": 0, "max_rows": 0, "mixed_steps": 0,
                      "max_modules": 0, "errors": 0, "step_s": 0.0, "prefill_s": 0.0}  # fmt: skip
        self.thread = threading.Thread(target=self._work, name="imprint-batcher", daemon=True)
        self.thread.start()

    def modules(self) -> dict:
        return self.cache.snapshot()

    def refuses(self, module: ModuleRef) -> str | None:
        return None  # every method joins the shared base (imprint.methods.loading.join)

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
        """The jobs to start now: wait (block, then the batch window) only when nothing is decoding."""
        with self.cond:
            if not self.active:
                while self.running and not self.queue:
                    self.cond.wait()
                deadline = self.queue[0].arrived + self.config.batch_window_ms / 1000 if self.queue else 0
                while self.running and sum(len(j.rows) for j in self.queue) < self.config.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
            jobs = []
            while self.queue:
                job = self.queue.popleft()
                if job.cancelled:  # its client left while it waited
                    for row in job.rows:
                        row.finish_reason = "cancelled"
                    job.complete(None)
                else:
                    jobs.append(job)
            return jobs

    def _requeue(self, jobs: list[Job]) -> None:
        with self.cond:
            self.queue.extendleft(reversed(jobs))

    def _work(self) -> None:
        while self.running:
            jobs = self._collect()
            if not self.running:
                break
            try:
                self._start(jobs)
                self._step()
            except Exception as exc:  # never let a failure kill the worker: fail the requests involved instead
                log.exception("batch failed")
                self.stats["errors"] += 1
                for job in [*jobs, *self.active]:
                    job.complete(exc)
                self.active, self.batches = [], {}
            self._finish()

    def _pinned(self) -> set[str]:
        return {job.module.key for job in self.active if job.module is not None}

    def _start(self, jobs: list[Job]) -> None:
        """Load the jobs' modules and let the rows of as many jobs as fit join batches."""
        waiting: list[Job] = []
        joining: dict[str, list[Job]] = {}
        for job in jobs:
            loaded = None
            if job.module is not None:
                try:
                    loaded = self.cache.get(job.module.key, job.module.method, job.module.directory, self._pinned())
                except ModuleTooLarge as exc:
                    if exc.fits_alone:  # not next to the modules in use: wait for their rows to finish
                        waiting.append(job)
                    else:
                        job.complete(exc)
                    continue
                except ImprintError as exc:  # a corrupt module (e.g. non-finite weights) fails its own requests only
                    log.warning("cannot load module %s: %s", job.module.key, exc)
                    job.complete(exc)
                    continue
                except Exception as exc:  # an unreadable module file fails its own requests only
                    log.exception("cannot load module %s", job.module.key)
                    job.complete(exc)
                    continue
            key = loaded.key if loaded is not None and loaded.model is not None else ""
            batch = self.batches.get(key)
            queued = sum(len(j.rows) for j in joining.get(key, []))
            rows = [r for j in [*joining.get(key, []), job] for r in j.rows]
            if batch is not None and (
                len(batch) + queued + len(job.rows) > self.config.max_batch or not batch.fits(rows)
            ):
                waiting.append(job)
                continue
            for row in job.rows:
                row.adapter = loaded.adapter if loaded is not None and loaded.adapter else row.adapter
                row.prefix = loaded.prefix if loaded is not None else None
            job.batch = key
            joining.setdefault(key, []).append(job)
            self.active.append(job)  # its module is pinned from now on
        if waiting:
            self._requeue(waiting)
        for key, group in joining.items():
            if key not in self.batches:
                model = self.cache.loaded[key].model if key else self.cache.shared_model
                self.batches[key] = Batch(model, self.tokenizer, router=None if key else self.cache.router)
            batch = self.batches[key]
            batch.router = None if key else self.cache.router  # the first LoRA module may have just loaded
            started = time.perf_counter()
            try:
                batch.admit([row for job in group for row in job.rows])
            except Exception as exc:
                self._fail(key, group, exc)
                continue
            self.stats["prefill_s"] += time.perf_counter() - started
            self.stats["prefills"] += 1
            self.stats["rows"] += sum(len(job.rows) for job in group)

    def _step(self) -> None:
        for key, batch in list(self.batches.items()):
            if not batch:
                continue
            jobs = [job for job in self.active if job.batch == key]
            modules = len({job.module.key if job.module else "" for job in jobs})
            live, started = len(batch), time.perf_counter()
            try:
                batch.step()
            except Exception as exc:
                self._fail(key, jobs, exc)
                continue
            s = self.stats
            s["step_s"] += time.perf_counter() - started
            s["steps"] += 1
            s["row_steps"] += live
            s["max_rows"] = max(s["max_rows"], live)
            s["mixed_steps"] += modules > 1
            s["max_modules"] = max(s["max_modules"], modules)

    def _fail(self, key: str, jobs: list[Job], exc: Exception) -> None:
        log.exception("generation failed", exc_info=exc)
        self.stats["errors"] += 1
        for job in jobs:
            for row in job.rows:
                row.finish_reason = row.finish_reason or "error"
            job.complete(exc)
        self.batches.pop(key, None)

    def _finish(self) -> None:
        """Complete the jobs whose rows have all finished; drop empty batches."""
        still = []
        for job in self.active:
            if all(row.finish_reason is not None for row in job.rows):
                job.complete(None)
            else:
                still.append(job)
        self.active = still
        self.batches = {key: batch for key, batch in self.batches.items() if batch}
