"""The one prompt format shared by training and answering: a mismatch between the two silently costs accuracy."""

from __future__ import annotations


def qa_prompt(question: str) -> str:
    """Closed-book question prompt. It holds no document text: the module must answer from its weights."""
    return f"Question: {question.strip()}\nAnswer:"


def passages_block(passages: list[tuple[str, str]]) -> str:
    """Passages (title, text) as they appear in retrieval and in-context prompts.

    Unnumbered on purpose: with "[1] ..." a small base model answers "[Name]", copying the markers.
    """
    return "\n\n".join(
        f"Passage from {title!r}:\n{text.strip()}" if title else text.strip() for title, text in passages
    )


CONTEXT_INSTRUCTION = "Answer the question in a few words, using only the passages below.\n\n"


def completion_prompt(prompt: str, passages: list[tuple[str, str]] | None = None) -> str:
    """A completion probe continues its prompt as given; open-book modes put the passages before it."""
    return f"{passages_block(passages)}\n\n{prompt}" if passages else prompt


def context_prompt(question: str, passages: list[tuple[str, str]]) -> str:
    """Open-book prompt (rag, module+rag, icl): passages, then the same question format the modules learn."""
    return f"{CONTEXT_INSTRUCTION}{passages_block(passages)}\n\n{qa_prompt(question)}"
