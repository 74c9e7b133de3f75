"""Generators: what writes the text of the model-based synthesis strategies.

A generator turns a batch of prompts into a batch of completions. Three are registered by name, imported only
when chosen: `openai` (any OpenAI-compatible HTTP endpoint: vLLM, SGLang, Ollama, llama.cpp's server, OpenAI),
`local` (a Hugging Face model in this process, batched) and `none` (writes nothing: the rule-based strategies
need no generator). `ScriptedGenerator` (`scripted.py`) is a deterministic generator for tests and dry runs.

Settings come from the `generator` section (`--set generator.base_url=...`); an API key is read from the
environment only (`IMPRINT_GENERATOR_API_KEY`, else `OPENAI_API_KEY`), never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from imprint.errors import ImprintError
from imprint.registry import resolve


class GeneratorError(ImprintError):
    """A generator failed in a way the user can fix: unreachable server, unknown model, refused request."""


@runtime_checkable
class Generator(Protocol):
    """Batched text completion. `name` is recorded on every record it writes (provenance)."""

    name: str

    def generate(
        self,
        prompts: list[str],
        max_tokens: int,
        temperature: float,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """One completion per prompt, in order, cut before the first stop string.

        `seed` makes sampling repeatable: prompt i is sampled with `seed + i` where the backend takes a seed per
        request (OpenAI-compatible servers); an in-process model seeds the batch once.
        """
        ...


@dataclass(frozen=True)
class GeneratorConfig:
    """Settings of the generators (section `generator`)."""

    model: str = field(
        default="",
        metadata={
            "help": "openai: the served model name (default: the server's only model); "
            "local: a base model name or Hugging Face directory (default: --model)"
        },
    )
    base_url: str = field(default="http://127.0.0.1:8000/v1", metadata={"help": "openai: the endpoint's /v1 URL"})
    api: str = field(
        default="completions",
        metadata={
            "help": "openai: 'completions' (/v1/completions, right for base models and few-shot templates) or "
            "'chat' (/v1/chat/completions, for chat-only endpoints: the template is sent as the user message)"
        },
    )
    api_key_env: str = field(
        default="",
        metadata={
            "help": "environment variable holding the key (default: IMPRINT_GENERATOR_API_KEY, "
            "then OPENAI_API_KEY; local servers need none)"
        },
    )
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight at once"})
    timeout_s: float = field(default=120.0, metadata={"help": "openai: seconds before a request is retried"})
    retries: int = field(default=5, metadata={"help": "openai: retries on 429, 5xx, timeouts and lost connections"})
    backoff_s: float = field(default=1.0, metadata={"help": "openai: first retry delay, doubled on each retry"})
    batch_size: int = field(default=16, metadata={"help": "local: prompts per forward batch"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold (1 = off)"})
    top_k: int = field(
        default=64,
        metadata={
            "help": "local: sample among the k likeliest tokens (0 = off). Cheaper than top_p on a 262k vocabulary, "
            "which sorts it at every step; OpenAI's API has no top_k, so the openai generator ignores it"
        },
    )
    chat_system: str = field(
        default="Continue the text. Reply with the continuation only, in the format the examples show.",
        metadata={"help": "openai chat: system message sent before the template"},
    )

    def __post_init__(self):
        if self.api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {self.api!r}")
        if self.concurrency < 1 or self.batch_size < 1 or self.retries < 0 or self.timeout_s <= 0 or self.top_k < 0:
            raise ValueError("concurrency and batch_size must be >= 1, retries and top_k >= 0, timeout_s > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


GENERATORS: dict[str, str] = {
    "openai": "imprint.synth.generators.openai:OpenAIGenerator",
    "local": "imprint.synth.generators.local:LocalGenerator",
    "none": "imprint.synth.generators.none:NoGenerator",
}


def make_generator(name: str, config: GeneratorConfig | None = None, default_model: str = "") -> Generator:
    """Build the generator registered as `name`; `default_model` is the base model a `local` one falls back to."""
    cls = resolve("generator", GENERATORS, name)
    return cls(config or GeneratorConfig(), default_model=default_model)


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Text before the earliest stop string (servers that ignore `stop`, and in-process generation, overshoot)."""
    cut = len(text)
    for s in stop or []:
        at = text.find(s)
        if s and at != -1:
            cut = min(cut, at)
    return text[:cut]
