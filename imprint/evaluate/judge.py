"""Optional LLM judge: a stronger model through any OpenAI-compatible endpoint grades each answer right or wrong.

Exact match misses right answers phrased differently ("the 1st of March" vs "1 March"); token F1 gives partial
credit to wrong ones. A judge reads the question, the accepted answers and the system's answer, and replies with
one word. Its verdict is reported beside EM and F1, never instead of them, and a reply that is neither word is
recorded as no verdict (None), not guessed.

The judge talks to any generator of `imprint.synth.generators` (`generate(prompts, max_tokens, temperature,
stop)`); `openai_judge` uses the `openai` one on a chat endpoint (vLLM, SGLang, Ollama, llama.cpp's server, or a
hosted API).
"""

from __future__ import annotations

import re

from imprint.errors import ImprintError

PROMPT = """You are grading a question-answering system. Decide whether the system's answer means the same as one \
of the accepted answers for this question. Ignore phrasing, case and extra words that do not change the meaning; \
an answer that adds a wrong fact or hedges between options is wrong.

Question: {question}
Accepted answers: {gold}
System's answer: {answer}

Reply with exactly one word: CORRECT or INCORRECT."""

SYSTEM = "You grade the answers of a question-answering system. Reply with one word."
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b")


def parse_verdict(reply: str) -> float | None:
    """1.0 for CORRECT, 0.0 for INCORRECT, None for anything else (the first verdict word counts)."""
    match = _VERDICT.search(reply.upper())
    if match is None:
        return None
    return 1.0 if match.group(1) == "CORRECT" else 0.0


class Judge:
    def __init__(self, generator, name: str = "judge"):
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


def openai_judge(base_url: str, model: str = "", retries: int = 5) -> Judge:
    """A judge behind an OpenAI-compatible chat endpoint, through imprint's `openai` generator (concurrent
    requests, retries with back-off; the key comes from IMPRINT_GENERATOR_API_KEY or OPENAI_API_KEY)."""
    from imprint.synth.generators import GeneratorConfig, make_generator

    config = GeneratorConfig(base_url=base_url, model=model, api="chat", chat_system=SYSTEM, retries=retries)
    generator = make_generator("openai", config)
    return Judge(generator, name=generator.name)
