"""The `openai` generator: any OpenAI-compatible endpoint (vLLM, SGLang, Ollama, llama.cpp's server, OpenAI).

It uses only the standard surface every such server implements: `GET /models`, `POST /completions` (the
default: right for base models and the few-shot templates) or `POST /chat/completions` (`generator.api=chat`,
for chat-only endpoints), with `max_tokens`, `temperature`, `top_p`, `stop` and `seed`. Requests run
concurrently through the official async client under a semaphore (`generator.concurrency`); a 429, a 5xx, a
timeout or a dropped connection is retried with exponential backoff and jitter (honouring `Retry-After`), and
any other refusal (bad key, unknown model, bad request) stops the run with one clear line.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading

import openai

from imprint.synth.generators import GeneratorConfig, GeneratorError, cut_at_stop

_RETRYABLE = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError)
_MAX_STOPS = 4  # OpenAI's limit on stop sequences; the rest are applied to the returned text


def api_key(config: GeneratorConfig) -> str:
    """The key from the environment; local servers take any string, so a missing key is not an error."""
    names = [config.api_key_env] if config.api_key_env else ["IMPRINT_GENERATOR_API_KEY", "OPENAI_API_KEY"]
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    if config.api_key_env:
        raise GeneratorError(f"generator.api_key_env names {config.api_key_env}, which is not set")
    return "not-needed"


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIGenerator:
    def __init__(self, config: GeneratorConfig | None = None, default_model: str = ""):
        self.config = config or GeneratorConfig()
        self.key = api_key(self.config)
        self.model = self.config.model or self._only_served_model()
        self.name = f"openai:{self.model}@{self.config.base_url}"
        self.batch_size = self.config.concurrency * 4  # enough prompts per call to keep every slot busy
        self.requests = 0  # HTTP attempts, retries included
        self.retried = 0

    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.config.base_url, api_key=self.key, timeout=self.config.timeout_s, max_retries=0
        )

    def _only_served_model(self) -> str:
        async def listing():
            async with self._client() as client:
                return [m.id async for m in client.models.list()]

        try:
            served = _run(listing())
        except openai.APIConnectionError as exc:
            raise GeneratorError(f"cannot reach the generator at {self.config.base_url}: {exc}") from None
        except openai.APIStatusError as exc:
            raise GeneratorError(f"generator at {self.config.base_url} refused /models: {_describe(exc)}") from None
        if len(served) != 1:
            offered = ", ".join(served[:10]) or "none"
            raise GeneratorError(f"set generator.model: {self.config.base_url} serves {len(served)} models ({offered})")
        return served[0]

    def generate(self, prompts, max_tokens, temperature, stop=None, seed=None) -> list[str]:
        if not prompts:
            return []
        return _run(self._generate_all(list(prompts), max_tokens, temperature, list(stop or []), seed))

    async def _generate_all(self, prompts, max_tokens, temperature, stop, seed) -> list[str]:
        gate = asyncio.Semaphore(self.config.concurrency)
        async with self._client() as client:

            async def one(i: int, prompt: str) -> str:
                async with gate:
                    text = await self._request(
                        client, prompt, max_tokens, temperature, stop, seed + i if seed is not None else None
                    )
                return cut_at_stop(text, stop)

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    async def _request(self, client, prompt, max_tokens, temperature, stop, seed) -> str:
        params = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature}
        if temperature > 0 and self.config.top_p < 1:
            params["top_p"] = self.config.top_p
        if stop:
            params["stop"] = stop[:_MAX_STOPS]
        if seed is not None:
            params["seed"] = seed
        delay = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            self.requests += 1
            try:
                if self.config.api == "chat":
                    messages = [
                        {"role": "system", "content": self.config.chat_system},
                        {"role": "user", "content": prompt},
                    ]
                    response = await client.chat.completions.create(messages=messages, **params)
                    return response.choices[0].message.content or ""
                response = await client.completions.create(prompt=prompt, **params)
                return response.choices[0].text or ""
            except _RETRYABLE as exc:
                if attempt == self.config.retries:
                    raise GeneratorError(
                        f"generator at {self.config.base_url} failed {attempt + 1} times: {_describe(exc)}"
                    ) from None
                self.retried += 1
                wait = _retry_after(exc) or delay * (1 + random.random() / 2)
                await asyncio.sleep(min(wait, 60.0))
                delay *= 2
            except openai.APIStatusError as exc:
                raise GeneratorError(f"generator at {self.config.base_url} refused: {_describe(exc)}") from None
        raise AssertionError("unreachable")


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc).splitlines()[0][:300]
    return f"{status} {message}" if status else message


def _run(coroutine):
    """Run a coroutine to completion, also from a thread whose event loop is already running (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
