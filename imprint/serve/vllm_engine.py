"""The vLLM engine: a server's rows decoded by vLLM's OpenAI-compatible `/v1/completions` instead of imprint's own
batcher (the `Engine` seam of `imprint.serve.scheduler`).

Each row becomes one streamed completions request: its prompt as token ids, `model` the module (`name@version`,
a LoRA adapter vLLM holds) or the base, its sampling (greedy for answers), stop strings and stop token ids, and
`logprobs` with `return_tokens_as_token_ids`, so every generated token comes back as an id with its log-probability.
The tokens are pushed into the row (`Row.push`) exactly as the local engine pushes them: stop strings, the
answer rule, streaming of settled text and the token budget apply the same way, and answers keep their
confidence. One rule vLLM has no switch for, no blank first token in an answer, is kept by reading the first
position's top alternatives: when vLLM opens with a blank, the best other token is taken (the draw of the row's
sampling when it samples) and the request continues from it; its log-probability is renormalised over the
tokens an answer may open with, as the local engine does.

Requests run on one event loop in a thread of their own (vLLM batches them); `job.done` is called from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading

import httpx

from imprint.errors import ImprintError
from imprint.inference import Row
from imprint.serve.config import ServeConfig
from imprint.serve.scheduler import Job, ModuleRef, QueueFull

TOP_LOGPROBS = 20  # alternatives per position for answers (vLLM's default --max-logprobs)


class UpstreamError(ImprintError):
    """vLLM refused a request or could not be reached."""


def _token_id(token: str) -> int:
    return int(token.rsplit(":", 1)[-1])  # "token_id:123" (return_tokens_as_token_ids)


class VllmEngine:
    def __init__(self, url: str, base_name: str, tokenizer, adapters, config: ServeConfig,
                 preloaded: dict | None = None, process=None):  # fmt: skip
        """`url` of vLLM (no /v1), `base_name` its served name for the base, `adapters` an
        `imprint.serve.vllm.Adapters`, `preloaded` the modules given on its command line, `process` the child to
        stop on close."""
        self.url, self.base_name, self.tokenizer = url, base_name, tokenizer
        self.adapters, self.config, self.process = adapters, config, process
        self.loaded = set(preloaded or ())
        self.note = ""
        self.stats = {"requests": 0, "rows": 0, "tokens": 0, "errors": 0, "first_token_retries": 0,
                      "adapters_loaded_at_runtime": 0}  # fmt: skip
        self.pending = 0  # requests submitted and not yet done (submit runs on the HTTP loop, done on ours)
        self._count = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="imprint-vllm", daemon=True)
        self.thread.start()
        self.client: httpx.AsyncClient = asyncio.run_coroutine_threadsafe(self._client(), self.loop).result()
        self._loading: dict[str, asyncio.Lock] = {}

    async def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(600, connect=10))

    # --- the Engine protocol ---

    def refuses(self, module: ModuleRef) -> str | None:
        return self.adapters.refuses(module)

    def modules(self) -> dict:
        return {"engine": "vllm", "url": self.url, "loaded": [{"module": key, "method": "lora"} for key in self.loaded]}

    def submit(self, job: Job) -> None:
        with self._count:
            if self.pending >= self.config.max_queue:
                raise QueueFull(f"{self.pending} requests are waiting for vLLM; retry shortly")
            self.pending += 1
        self.stats["requests"] += 1
        self.stats["rows"] += len(job.rows)
        asyncio.run_coroutine_threadsafe(self._run(job), self.loop)

    def close(self) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.client.aclose(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if self.process is not None:
            self.process.close()

    # --- on the engine's loop ---

    async def _run(self, job: Job) -> None:
        error = None
        try:
            model = await self._model(job.module)
            await asyncio.gather(*(self._row(row, model) for row in job.rows))
        except Exception as exc:  # fails this request only
            self.stats["errors"] += 1
            error = exc
        finally:
            with self._count:
                self.pending -= 1
        job.complete(error)

    async def _model(self, module: ModuleRef | None) -> str:
        """vLLM's name for what answers the rows: the base, or the module's adapter (loaded first if vLLM lacks it)."""
        if module is None:
            return self.base_name
        if module.key not in self.loaded:
            async with self._loading.setdefault(module.key, asyncio.Lock()):
                if module.key not in self.loaded:
                    path = await asyncio.get_running_loop().run_in_executor(None, self.adapters.prepare, module)
                    reply = await self.client.post("/v1/load_lora_adapter",
                                                   json={"lora_name": module.key, "lora_path": str(path)})  # fmt: skip
                    if reply.status_code != 200 and "already" not in reply.text:
                        raise UpstreamError(f"vLLM did not load the adapter of {module.key}: {reply.text[:200]}")
                    self.loaded.add(module.key)
                    self.stats["adapters_loaded_at_runtime"] += 1
        return module.key

    async def _row(self, row: Row, model: str) -> None:
        prompt, budget, first = list(row.prompt_ids), row.sampling.max_tokens, True
        while budget > 0 and row.finish_reason is None:
            retry = None
            async with contextlib.aclosing(self._stream(row, model, prompt, budget, first)) as stream:
                async for token, logprob, top, finished in stream:  # leaving the loop closes the request
                    if row.cancelled():
                        row.end("cancelled")
                        return
                    if token is not None and first and row.suppress_first:
                        if token in row.suppress_first:  # vLLM opened with a blank: go on from the best other token
                            self.stats["first_token_retries"] += 1
                            retry = self._choose(row, top)
                            break
                        logprob = _renormalised(logprob, top, row.suppress_first)
                    if token is not None:
                        first = False
                        self.stats["tokens"] += 1
                        row.push(token, logprob, self.tokenizer)
                        if row.finish_reason is not None:
                            return
                    if finished:
                        row.end(finished)
                        return
            if retry is None:
                row.end("stop")  # the stream ended without a reason
                return
            token, logprob = retry
            first = False
            row.push(token, logprob, self.tokenizer)
            prompt, budget = prompt + [token], budget - 1
        row.end("length")

    def _choose(self, row: Row, top: dict[int, float]) -> tuple[int, float]:
        """The first token among vLLM's top alternatives that an answer may open with: the likeliest for greedy rows,
        a draw at the row's temperature otherwise; its log-probability renormalised without the blank ones."""
        allowed = {t: lp for t, lp in top.items() if t not in row.suppress_first}
        if not allowed:
            raise UpstreamError(f"vLLM's {TOP_LOGPROBS} likeliest first tokens are all blank: no answer to give")
        if row.sampling.greedy:
            token = max(allowed, key=allowed.get)
        else:
            rng = random.Random(row.sampling.seed)
            weights = [math.exp(lp / row.sampling.temperature) for lp in allowed.values()]
            token = rng.choices(list(allowed), weights)[0]
        return token, _renormalised(allowed[token], top, row.suppress_first)

    async def _stream(self, row: Row, model: str, prompt: list[int], budget: int, first: bool):
        """(token id, its log-probability, {top alternative: log-probability}, finish reason or None) as vLLM
        streams them."""
        s = row.sampling
        body = {"model": model, "prompt": prompt, "max_tokens": budget, "temperature": s.temperature,
                "top_p": s.top_p, "stop": list(s.stop), "stop_token_ids": sorted(row.stop_ids),
                "ignore_eos": not row.stop_ids, "presence_penalty": s.presence_penalty,
                "frequency_penalty": s.frequency_penalty, "logprobs": TOP_LOGPROBS if first and row.suppress_first
                else 1, "return_tokens_as_token_ids": True, "include_stop_str_in_output": True,
                "skip_special_tokens": True, "stream": True}  # fmt: skip
        if s.seed is not None:
            body["seed"] = s.seed
        if s.top_k:
            body["top_k"] = s.top_k
        try:
            async with self.client.stream("POST", "/v1/completions", json=body) as reply:
                if reply.status_code != 200:
                    text = (await reply.aread()).decode(errors="replace")
                    raise UpstreamError(f"vLLM answered {reply.status_code}: {_message(text)}")
                async for line in reply.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    for item in _tokens(json.loads(line[5:])):
                        yield item
        except httpx.HTTPError as exc:
            raise UpstreamError(f"vLLM at {self.url} is unreachable: {exc!r}") from None


def _tokens(chunk: dict):
    """The tokens of one streamed chunk, the last carrying its finish reason."""
    if "error" in chunk:
        raise UpstreamError(f"vLLM failed mid-stream: {_message(json.dumps(chunk))}")
    for choice in chunk.get("choices", []):
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens") or []
        tops = logprobs.get("top_logprobs") or [None] * len(tokens)
        for i, (token, logprob) in enumerate(zip(tokens, logprobs.get("token_logprobs") or [], strict=True)):
            top = {_token_id(t): lp for t, lp in (tops[i] or {}).items()}
            yield _token_id(token), float(logprob), top, choice.get("finish_reason") if i == len(tokens) - 1 else None
        if not tokens and choice.get("finish_reason"):
            yield None, 0.0, {}, choice["finish_reason"]


def _renormalised(logprob: float, top: dict[int, float], suppressed) -> float:
    """A first token's log-probability over the tokens an answer may open with (blank ones in `top` removed)."""
    blank = sum(math.exp(lp) for t, lp in top.items() if t in suppressed)
    return logprob - math.log(max(1e-12, 1 - blank))


def _message(text: str) -> str:
    try:
        body = json.loads(text)
        return str(body.get("error", {}).get("message") or body.get("message") or text).splitlines()[0][:300]
    except (ValueError, AttributeError):
        return text.strip().splitlines()[0][:300] if text.strip() else "no message"
