"""What the HTTP routes call: resolve `model` for a tenant, enforce limits, queue the rows, and shape the answers
as OpenAI responses (whole, or as server-sent events while tokens arrive).

Runs on the event loop; the batcher's thread hands results back with `call_soon_threadsafe` only.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from imprint import refs
from imprint.answer.calibration import load_calibration, uncalibrated
from imprint.errors import ImprintError, NotFoundError
from imprint.inference import Row, Sampling, stop_token_ids
from imprint.integrity import NonFiniteModuleError
from imprint.models import BaseModel
from imprint.serve.config import ServeConfig
from imprint.serve.errors import APIError
from imprint.serve.indexes import IndexCache
from imprint.serve.modules import ModuleCache, ModuleTooLarge
from imprint.serve.prompting import Prompt
from imprint.serve.scheduler import Engine, Job, ModuleRef, QueueFull, Scheduler
from imprint.serve.tenants import KeyRing, Tenant
from imprint.system import ANSWER_TOKENS, ContextTooLong, Mode, System


def _epoch(stamp: str) -> int:
    try:
        return int(datetime.fromisoformat(stamp).timestamp())
    except (TypeError, ValueError):
        return 0


class Service:
    def __init__(self, workspace: Path, base: BaseModel, keys: KeyRing, config: ServeConfig,
                 engine: Engine | None = None):  # fmt: skip
        """`engine` decodes the rows (`imprint.serve.scheduler.Engine`); None: imprint's own batcher on `base`."""
        self.root = Path(workspace)
        self.base = base
        self.tokenizer = base.tokenizer
        self.keys = keys
        self.config = config
        if engine is None:
            cache = ModuleCache(base, int(config.max_loaded_mb * 2**20), config.lora_backend)
            engine = Scheduler(cache, base.tokenizer, config)
        self.engine = engine
        self.stop_ids = stop_token_ids(base.tokenizer, base.model)
        limit = getattr(base.model.config.get_text_config(), "max_position_embeddings", None) or config.max_context
        self.max_context = min(config.max_context, limit)
        self.base_names = {base.name, Path(base.name).name}
        self.indexes = IndexCache(config.max_loaded_indexes)
        self.inflight: dict[str, int] = {}
        self.usage: dict[str, dict[str, int]] = {}  # per tenant: what /v1/imprint/stats shows it
        self.started = int(time.time())
        self._local = threading.local()
        # retrieval and evidence: one thread, so the index cache and its SQLite connections are never shared
        self.retrieval_thread = ThreadPoolExecutor(1, thread_name_prefix="imprint-retrieval")

    def workspace(self):
        """This thread's connection to the workspace (SQLite connections stay on the thread that made them)."""
        from imprint.workspace import Workspace

        if getattr(self._local, "ws", None) is None:
            self._local.ws = Workspace.open(self.root)
        return self._local.ws

    # --- models a tenant sees ---

    def resolve(self, spec: str, tenant: Tenant) -> ModuleRef | None:
        """The module `spec` names, None for the base model; 404 when it is unknown or not this tenant's."""

        missing = APIError(
            404, f"The model '{spec}' does not exist or you do not have access to it.", "model", "model_not_found"
        )
        if spec in self.base_names:
            if not tenant.base:
                raise missing
            return None
        try:
            ref = refs.parse(spec)  # '@²', '@١', '@0', '@@'...: as unknown as a module that does not exist
        except refs.BadModuleRef:
            raise missing from None
        if not tenant.allows(ref.name):
            raise missing
        try:
            entry = self.workspace().get_module(ref.name, ref.version)
        except (NotFoundError, ImprintError):
            raise missing from None
        if not tenant.owns(entry.collection):  # trained on another tenant's documents: as if it did not exist
            raise missing
        if entry.base_model != self.base.name:
            raise APIError(
                400,
                f"The model '{spec}' was trained on base model {entry.base_model}; this server runs {self.base.name}.",
                "model",
                "model_base_mismatch",
            )
        ref = ModuleRef(f"{entry.name}@{entry.version}", entry.method, Path(entry.path), entry.collection)
        refused = self.engine.refuses(ref)
        if refused:
            raise APIError(400, f"The model '{spec}' cannot be served here: {refused}.", "model", "model_not_supported")
        return ref

    def models(self, tenant: Tenant) -> list[dict]:
        owner = "imprint" if self.keys.is_open else tenant.name
        base = Path(self.base.name).name
        cards = [dict(id=base, created=self.started, owned_by=owner, root=base, method="base")] if tenant.base else []
        latest: dict[str, dict] = {}
        ws = self.workspace()
        current = ws.current_versions()
        for m in ws.modules():
            if m.base_model != self.base.name or not tenant.allows(m.name) or not tenant.owns(m.collection):
                continue
            if self.engine.refuses(ModuleRef(f"{m.name}@{m.version}", m.method, Path(m.path), m.collection)):
                continue  # e.g. a prefix module behind vLLM: not listed (a request naming it gets a 400 saying why)
            card = dict(
                id=f"{m.name}@{m.version}", created=_epoch(m.created_at), owned_by=owner, root=base, method=m.method
            )
            cards.append(card)
            if current.get(m.name) == m.version:  # the bare name serves the current version (`imprint rollback`)
                latest[m.name] = {**card, "id": m.name}
        return cards + list(latest.values())

    def retrieval_options(self, body, module: ModuleRef | None):
        """The request's `imprint` options when it asks for retrieval or evidence, else None."""
        options = body.imprint
        return options if options is not None and (options.retrieval or options.evidence) else None

    def collections(self, tenant: Tenant, module: ModuleRef | None, options) -> list[str]:
        """The collections a request's retrieval searches: the one it names, else its module's, else every one the
        tenant owns. Naming a collection the tenant does not own is a 404, as for one that does not exist."""
        ws = self.workspace()
        if options.collection is not None:
            if not tenant.owns(options.collection) or not ws.has_collection(options.collection):
                raise APIError(404, f"The collection '{options.collection}' does not exist or you do not have "
                               "access to it.", "imprint.collection", "collection_not_found")  # fmt: skip
            return [options.collection]
        if module is not None:
            return [module.collection]
        return [name for name, n in ws.collections().items() if n and tenant.owns(name)]

    def retriever(self, collections: list[str]):
        """The retrieval index over `collections` (on the worker thread: SQLite connections stay there), each
        opened lazily and kept in the index LRU; None when they hold no documents."""
        from imprint.retrieval import MergedRetriever

        ws = self.workspace()
        pinned = frozenset(collections)
        found = [r for r in (self.indexes.get(ws, c, pinned) for c in collections) if r is not None]
        if len(found) <= 1:
            return found[0] if found else None
        return MergedRetriever(found)

    async def answer(self, body, question: str, module: ModuleRef | None, tenant: Tenant, options):
        """One question answered as `imprint ask` answers it, through the same `System` steps: `rag` or
        `module+rag` with retrieval, `base` or `module` closed-book plus evidence otherwise; greedy, by the answer
        rule. The System's rows decode in the shared batch beside every other request's; retrieval and evidence
        run on the retrieval thread (the workspace's SQLite connections and the index cache stay there)."""
        if body.n != 1:
            raise APIError(400, "Answers with retrieval or evidence come one at a time: use n=1.", "n")
        max_tokens = self.max_tokens(body, tenant, default=ANSWER_TOKENS)
        label = module.key if module else None
        mode = (
            (Mode.MODULE_RAG if module else Mode.RAG) if options.retrieval else (Mode.MODULE if module else Mode.BASE)
        )
        collections = self.collections(tenant, module, options)
        loop = asyncio.get_running_loop()

        def prepare():
            retriever = self.retriever(collections)
            if retriever is None and options.retrieval:
                raise APIError(400, "The workspace has no documents to retrieve from.", "imprint.retrieval")
            # a calibration is fitted on one collection's evidence: applied there only, never across a merge
            key = mode.calibration_key(label)
            one = collections[0] if len(collections) == 1 else None
            calibration = load_calibration(self.root, key, mode, one) if one else uncalibrated(key)
            system = System(mode, self.tokenizer, None, label, one, retriever, None, calibration, options.k,
                            self.max_context, self.stop_ids)  # fmt: skip
            return system.plan([question], max_new_tokens=max_tokens)

        try:
            plan = await loop.run_in_executor(self.retrieval_thread, prepare)
        except Exception as exc:
            raise as_api_error(exc, "messages") from exc
        await self.run(plan.rows, module, tenant)  # module+rag: its closed-book row too, in the same batch
        try:
            return (await loop.run_in_executor(self.retrieval_thread, plan.finish))[0]
        except Exception as exc:
            raise as_api_error(exc) from exc

    def answer_rows(self, body, question: str, module: ModuleRef, tenant: Tenant) -> list[Row]:
        """A one-question chat on a module, without `imprint` options: the rows of `imprint ask --mode module`
        (the same System steps and answer rule, greedy) for each of `n` choices; a temperature or top-p the request
        sets explicitly samples instead, under the same answer rule."""
        max_tokens = self.max_tokens(body, tenant, default=ANSWER_TOKENS)
        self._check_n(body, 1)
        system = System(Mode.MODULE, self.tokenizer, None, module.key, max_context=self.max_context,
                        stop_ids=self.stop_ids)  # fmt: skip
        sampled = bool({"temperature", "top_p"} & body.model_fields_set)
        rows = []
        for j in range(body.n):
            sampling = self._sampling(body, max_tokens, j) if sampled else None
            try:
                rows += system.plan([question], max_new_tokens=max_tokens, sampling=sampling).rows
            except ContextTooLong as exc:
                raise as_api_error(exc, "messages") from None
        return rows

    # --- running a request ---

    def max_tokens(self, body, tenant: Tenant, default: int | None = None) -> int:
        """The request's token budget, checked against the key's limit (`default` when it sets none)."""
        limit = min(self.config.max_tokens, tenant.max_tokens or self.config.max_tokens)
        max_tokens = body.max_tokens or getattr(body, "max_completion_tokens", None)
        if max_tokens is None:
            max_tokens = min(default or self.config.default_max_tokens, limit)
        if max_tokens > limit:
            raise APIError(
                400,
                f"max_tokens is too large: {max_tokens}. This key allows at most {limit}.",
                "max_tokens",
                "max_tokens_exceeded",
            )
        return max_tokens

    def _check_n(self, body, prompts: int) -> None:
        if body.n > self.config.max_n:
            raise APIError(400, f"n is too large: {body.n}. This server allows at most {self.config.max_n}.", "n")
        if body.n * prompts > self.config.max_batch:
            raise APIError(
                400,
                f"n x prompts = {body.n * prompts} sequences; at most {self.config.max_batch} per request.",
                "n",
            )

    def _sampling(self, body, max_tokens: int, j: int, extra_stop: tuple[str, ...] = ()) -> Sampling:
        """The request's sampling settings for its `j`-th choice (its seed advanced by `j`)."""
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        seed = None if body.seed is None else (body.seed + j) % 2**63
        return Sampling(max_tokens, body.temperature, body.top_p, stop + extra_stop, seed, body.presence_penalty,
                        body.frequency_penalty)  # fmt: skip

    def plan(self, body, prompts: list[Prompt], tenant: Tenant, prompt_param: str) -> list[Row]:
        """Check the request against the limits and turn it into rows (prompt-major, then `n`)."""
        max_tokens = self.max_tokens(body, tenant)
        self._check_n(body, len(prompts))
        rows = []
        for prompt in prompts:
            if not prompt.ids:
                raise APIError(400, "The prompt is empty.", prompt_param)
            if len(prompt.ids) + max_tokens > self.max_context:
                raise APIError(
                    400,
                    f"This model's maximum context length is {self.max_context} tokens. However, you "
                    f"requested {len(prompt.ids) + max_tokens} tokens ({len(prompt.ids)} in the prompt, "
                    f"{max_tokens} for the completion).",
                    prompt_param,
                    "context_length_exceeded",
                )
            for j in range(body.n):
                sampling = self._sampling(body, max_tokens, j, prompt.stop)
                stop_ids = frozenset() if body.ignore_eos else self.stop_ids
                rows.append(Row(prompt.ids, sampling, stop_ids, lstrip=prompt.lstrip))
        return rows

    def _admit(self, tenant: Tenant) -> None:
        limit = tenant.max_concurrency or self.config.max_concurrency
        if self.inflight.get(tenant.name, 0) >= limit:
            raise APIError(
                429,
                f"Too many requests in flight for this key (limit {limit}); retry when one finishes.",
                code="concurrency_limit_exceeded",
            )
        self.inflight[tenant.name] = self.inflight.get(tenant.name, 0) + 1

    def _release(self, tenant: Tenant) -> None:
        self.inflight[tenant.name] -= 1

    def submit(self, rows: list[Row], module: ModuleRef | None, tenant: Tenant, on_done) -> Job:
        """Queue the rows; `on_done(exc)` runs on the event loop once they are all finished (or failed)."""
        loop = asyncio.get_running_loop()
        self._admit(tenant)
        usage = self.usage.setdefault(tenant.name, {"requests": 0, "completion_tokens": 0})
        usage["requests"] += 1

        def finished(exc):
            self._release(tenant)
            usage["completion_tokens"] += sum(len(r.logprobs) for r in rows)
            on_done(exc)

        job = Job(rows, module, lambda exc: loop.call_soon_threadsafe(finished, exc))
        try:
            self.engine.submit(job)
        except QueueFull as exc:
            self._release(tenant)
            detail = f": {exc}" if tenant.admin else "; retry shortly"  # the queue's length counts other tenants
            raise APIError(429, f"The server is busy{detail}.", code="queue_full") from None
        return job

    def stats(self, tenant: Tenant) -> dict:
        """/v1/imprint/stats: server-wide counters for an admin key (and an open server); for any other key only
        its own numbers, so one tenant cannot read another's traffic or modules."""
        if tenant.admin:
            modules = self.engine.modules()
            modules["loaded"] = len(modules["loaded"])
            return {"scheduler": dict(self.engine.stats), "modules": modules, "indexes": self.indexes.snapshot(),
                    "tenants": {name: dict(u) for name, u in self.usage.items()}}  # fmt: skip
        usage = self.usage.get(tenant.name, {"requests": 0, "completion_tokens": 0})
        mine = {f"{m.name}@{m.version}" for m in self.workspace().modules()
                if tenant.allows(m.name) and tenant.owns(m.collection)}  # fmt: skip
        loaded = sum(m["module"] in mine for m in self.engine.modules()["loaded"])
        return {"tenant": tenant.name, **usage, "in_flight": self.inflight.get(tenant.name, 0),
                "modules": {"loaded": loaded}}  # fmt: skip

    async def run(self, rows: list[Row], module: ModuleRef | None, tenant: Tenant) -> None:
        future = asyncio.get_running_loop().create_future()

        def on_done(exc):
            if not future.done():
                future.set_exception(exc) if exc else future.set_result(None)

        job = self.submit(rows, module, tenant, on_done)
        try:
            await future
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        except Exception as exc:
            raise as_api_error(exc) from exc

    def stream(self, rows: list[Row], module: ModuleRef | None, tenant: Tenant) -> AsyncIterator[tuple]:
        """Queue the rows now (so a refusal is still an HTTP status) and return an iterator of (row index, text)
        as text settles; it raises an APIError if generation fails."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i, row in enumerate(rows):
            row.on_delta = lambda text, i=i: loop.call_soon_threadsafe(queue.put_nowait, (i, text))
        job = self.submit(rows, module, tenant, lambda exc: queue.put_nowait((None, exc)))
        return self._drain(queue, job)

    async def _drain(self, queue: asyncio.Queue, job: Job) -> AsyncIterator[tuple]:
        try:
            while True:
                index, item = await queue.get()
                if index is None:
                    if item is not None:
                        raise as_api_error(item)
                    return
                yield index, item
        finally:
            job.cancelled = True  # the client left (or we are done): stop decoding its rows


def as_api_error(exc: BaseException, prompt_param: str | None = None) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextTooLong):
        return APIError(400, str(exc), prompt_param, "context_length_exceeded")
    if isinstance(exc, ModuleTooLarge):
        return APIError(503, str(exc), "model", "module_exceeds_memory_budget")
    if isinstance(exc, NonFiniteModuleError):
        return APIError(500, f"The module cannot be served: {exc}", "model", "module_not_finite")
    return APIError(500, f"The server could not generate an answer: {str(exc).splitlines()[0] if str(exc) else exc!r}")


def usage(prompts: list[Prompt], rows: list[Row]) -> dict:
    prompt_tokens = sum(len(p.ids) for p in prompts)
    completion = sum(len(r.logprobs) for r in rows)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"
