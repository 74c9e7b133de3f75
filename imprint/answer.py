"""Answering questions closed-book: the bare base model (`base`) or the base with a trained module (`module`).

The prompt holds the question only, never document text, so a right answer from `module` can only come from
what training wrote into the weights. Confidence is the geometric mean of the generated tokens' probabilities.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from imprint.models import wants_autocast
from imprint.prompts import qa_prompt


@dataclass(frozen=True)
class Answer:
    answer: str
    confidence: float
    mode: str
    module: str | None = None
    evidence: list = field(default_factory=list)
    latency_ms: float = 0.0
    prompt_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _cut(text: str) -> str:
    """A base model keeps going after its answer: keep the first line, without a trailing 'Question:'."""
    return text.split("\n", 1)[0].split("Question:", 1)[0].strip()


@torch.inference_mode()
def answer_questions(
    model: torch.nn.Module,
    tokenizer,
    questions: list[str],
    mode: str,
    module: str | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress=None,
) -> list[Answer]:
    """Greedy answers for a list of questions, batched with left padding."""
    model.eval()
    device = next(model.parameters()).device
    answers: list[Answer] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stop_ids = [tokenizer.eos_token_id] + [t for t in tokenizer.convert_tokens_to_ids(["\n", "Ċ"]) if t is not None]
    stop_ids = sorted({t for t in stop_ids if t is not None and t != tokenizer.unk_token_id})
    try:
        for start in range(0, len(questions), batch_size):
            chunk = questions[start : start + batch_size]
            t0 = time.perf_counter()
            enc = tokenizer([qa_prompt(q) for q in chunk], return_tensors="pt", padding=True).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                    output_scores=True,
                    return_dict_in_generate=True,
                )
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)
            token_lp = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
            latency = (time.perf_counter() - t0) * 1000 / len(chunk)
            for row in range(len(chunk)):
                text = tokenizer.decode(new[row], skip_special_tokens=True)
                answer = _cut(text)
                n = len(tokenizer.encode(answer, add_special_tokens=False)) if answer else 0
                confidence = float(token_lp[row, : max(1, n)].mean().exp()) if answer else 0.0
                prompt_tokens = int(enc["attention_mask"][row].sum())
                answers.append(Answer(answer, round(confidence, 4), mode, module, [], round(latency, 1), prompt_tokens))
            if progress:
                progress(min(start + batch_size, len(questions)), len(questions))
    finally:
        tokenizer.padding_side = side
    return answers
