"""The one prompt format shared by training and answering: a mismatch between the two silently costs accuracy."""

from __future__ import annotations


def qa_prompt(question: str) -> str:
    """Closed-book question prompt. It holds no document text: the module must answer from its weights."""
    return f"Question: {question.strip()}\nAnswer:"
