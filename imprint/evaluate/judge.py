"""Optional LLM judge: a stronger model through any OpenAI-compatible endpoint grades each answer right or wrong.

Exact match misses right answers phrased differently ("the 1st of March" vs "1 March"); token F1 gives partial
credit to wrong ones. A judge reads the question, the accepted answers and the system's answer, and replies with
one word. Its verdict is reported beside EM and F1, never instead of them, and a reply that is neither word is
recorded as no verdict (None), not guessed.

The judge talks to a `generate(prompts, max_tokens, temperature, stop) -> list[str]` object (the generator
protocol of `imprint.synth`); `OpenAIChat` is one over the official `openai` client and a chat endpoint
(vLLM, SGLang, Ollama, llama.cpp server, or a hosted API).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from imprint.errors import ImprintError

PROMPT = """You are grading a question-answering system. Decide whether the system's answer means the same as one \
of the accepted answers for this question. Ignore phrasing, case and extra words that do not change the meaning; \
an answer that adds a wrong fact or hedges between options is wrong.

Question: {question}
Accepted answers: {gold}
System's answer: {answer}

Reply with exactly one word: CORRECT or INCORRECT."""

_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b")


class Generator(Protocol):
    def generate(
        self, prompts: list[str], max_tokens: int, temperature: float, stop: list[str] | None
    ) -> list[str]: ...


class OpenAIChat:
    """A generator over an OpenAI-compatible chat endpoint, requests sent concurrently."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8):
        from openai import OpenAI

        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # local servers accept any key
        self.client = OpenAI(base_url=base_url, api_key=key, max_retries=2, timeout=120)
        self.model = model
        self.concurrency = concurrency

    def _one(self, prompt: str, max_tokens: int, temperature: float, stop: list[str] | None) -> str:
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
        )
        return reply.choices[0].message.content or ""

    def generate(self, prompts: list[str], max_tokens: int, temperature: float, stop: list[str] | None) -> list[str]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, max_tokens, temperature, stop), prompts))


def parse_verdict(reply: str) -> float | None:
    """1.0 for CORRECT, 0.0 for INCORRECT, None for anything else (the first verdict word counts)."""
    match = _VERDICT.search(reply.upper())
    if match is None:
        return None
    return 1.0 if match.group(1) == "CORRECT" else 0.0


class Judge:
    def __init__(self, generator: Generator, name: str = "judge"):
        self.generator = generator
        self.name = name

    def grade(self, triples: list[tuple[str, list[str], str]]) -> list[float | None]:
        """Verdicts for (question, accepted answers, system answer) triples; an empty answer is wrong unasked."""
        prompts = [PROMPT.format(question=q, gold=" | ".join(g), answer=a) for q, g, a in triples if a.strip()]
        try:
            replies = iter(self.generator.generate(prompts, max_tokens=8, temperature=0.0, stop=None))
        except Exception as exc:  # network, auth, unknown model: the user can fix it
            raise ImprintError(f"the LLM judge failed: {str(exc).splitlines()[0]}") from exc
        return [parse_verdict(next(replies)) if a.strip() else 0.0 for _, _, a in triples]


def openai_judge(base_url: str, model: str, api_key: str | None = None) -> Judge:
    return Judge(OpenAIChat(base_url, model, api_key), name=f"{model} at {base_url}")
