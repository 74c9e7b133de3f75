"""From an API request to the text the model sees, and where its answer ends.

- `/v1/completions`: the prompt as given (plus the tokenizer's BOS), nothing added.
- `/v1/chat/completions` on a module, when the conversation is one user message: not a chat but a question,
  answered as `imprint ask --mode module` answers it (`imprint.system.System`: the closed-book question format the
  modules were trained on, "Question: ...\\nAnswer:", and the answer rule). The module answers best in this format.
- any other chat: the tokenizer's chat template when it has one; otherwise (the embedded gemma-3-270m is a base
  model and has none) a plain transcript, system text first, then "User: ...", "Assistant: ..." lines, ending in
  "Assistant:"; generation stops before the model writes the next "\\nUser:" turn.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSCRIPT_STOP = "\nUser:"


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: list[int]
    stop: tuple[str, ...] = ()  # stop strings the format adds to the request's own
    lstrip: bool = False  # drop the space a format leaves before the answer
    style: str = "raw"  # raw | qa | template | transcript


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def completion_prompt(tokenizer, text: str) -> Prompt:
    return Prompt(text, _encode(tokenizer, text, True))


def single_question(messages: list[tuple[str, str]]) -> str | None:
    """The question, when the conversation is exactly one user message."""
    if len(messages) == 1 and messages[0][0] == "user" and messages[0][1].strip():
        return messages[0][1]
    return None


def chat_prompt(tokenizer, messages: list[tuple[str, str]]) -> Prompt:
    """`messages` as (role, text) pairs; roles system, developer, user, assistant. (A one-question chat on a module
    is answered as a question instead: `Service.answer_rows`.)"""
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": "system" if r == "developer" else r, "content": t} for r, t in messages]
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return Prompt(text, _encode(tokenizer, text, False), style="template")
    return transcript_prompt(tokenizer, messages)


def transcript_prompt(tokenizer, messages: list[tuple[str, str]]) -> Prompt:
    system = "\n".join(t.strip() for r, t in messages if r in ("system", "developer") and t.strip())
    lines = [
        f"{'User' if r == 'user' else 'Assistant'}: {t.strip()}" for r, t in messages if r in ("user", "assistant")
    ]
    text = (system + "\n\n" if system else "") + "\n".join([*lines, "Assistant:"])
    return Prompt(text, _encode(tokenizer, text, True), stop=(TRANSCRIPT_STOP,), lstrip=True, style="transcript")
