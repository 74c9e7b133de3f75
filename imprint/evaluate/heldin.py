"""Held-in recall: does a freshly trained module answer its own training questions better than the base model?

The cheapest proof that a run learned anything, taken at the end of every `imprint train`/`learn` (a few
seconds): a seeded sample of the run's question-answer records is answered closed book, exactly as `imprint
ask` answers, by the base model before training and by the module after it, and scored by token F1 and exact
match against the records' answers. A module that does no better than the base failed, whatever its loss curve
says (a silent NaN, a learning rate that never moved the adapter, a method that cannot hold the data). Sets
without question-answer records (raw text) are checked by the mean next-token loss of a sample of their texts.

An update (`imprint update`) starts from its parent's weights, which already beat the base on everything the
parent learned: comparing it with the base would pass an update that learned nothing new. So an update is checked
on a sample of its *new* records only (those of added and changed documents, and the change statements), against
its parent scored the same way before training, and must beat the parent by the same margin. An update with no new
records (only removals) has nothing new to check.

This is recall of training data, not the held-out accuracy `imprint eval` measures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from imprint.evaluate.metrics import exact_match, mean, token_f1
from imprint.models import wants_autocast
from imprint.synth.records import SynthRecord

F1_MARGIN = 0.05  # the module must beat the base by this much token F1 (about 2 of 32 questions answered)
NLL_MARGIN = 0.05  # text-only sets: nats per token the module's loss must fall below the base's
MAX_TEXT_TOKENS = 128


@dataclass(frozen=True)
class HeldIn:
    """A seeded sample of a run's own training records, scored the same way before and after training."""

    kind: str  # "qa" or "text"
    records: tuple[SynthRecord, ...]

    @classmethod
    def sample(cls, records: list[SynthRecord], n: int, seed: int = 0) -> HeldIn | None:
        """Question-answer records if the set has any, else text records; None for an empty set."""
        qa = [r for r in records if r.kind == "qa" and r.question and r.answer]
        pool, kind = (qa, "qa") if qa else ([r for r in records if r.kind == "text" and r.text], "text")
        if not pool:
            return None
        picked = random.Random(seed).sample(pool, min(n, len(pool)))
        return cls(kind, tuple(picked))

    def score(self, model: torch.nn.Module, tokenizer) -> dict:
        """{f1, em} for question-answer samples, {nll} for text samples."""
        if self.kind == "qa":
            from imprint.system import answer_questions

            answers = answer_questions(model, tokenizer, [r.question for r in self.records], mode="base")
            pairs = [(a.guess, [r.answer]) for a, r in zip(answers, self.records, strict=True)]
            return {
                "f1": round(mean([token_f1(*pair) for pair in pairs]), 4),
                "em": round(mean([exact_match(*pair) for pair in pairs]), 4),
            }
        return {"nll": round(_mean_nll(model, tokenizer, [r.text for r in self.records]), 4)}

    def verdict(self, reference: dict, module: dict, parent: str | None = None) -> dict:
        """The figure recorded in the module's manifest: both scores, and whether the module passed. `reference` is
        the base's score, or, for an update, its parent's (`parent`: "name@N"), recorded under "parent"."""
        if self.kind == "qa":
            passed = module["f1"] >= reference["f1"] + F1_MARGIN
        else:
            passed = module["nll"] <= reference["nll"] - NLL_MARGIN
        against = {"parent": reference, "against": parent} if parent else {"base": reference}
        return {"kind": self.kind, "n": len(self.records), **against, "module": module, "passed": passed}


def describe(verdict: dict) -> str:
    """One line: 'held-in recall on 32 training questions: module F1 0.85 (EM 0.81) vs base 0.05 (EM 0.00)'; an
    update's: 'held-in recall on 12 new training questions: module F1 0.60 (EM 0.50) vs parent m@1 F1 0.10 ...'."""
    module, n = verdict["module"], verdict["n"]
    if "parent" in verdict:
        reference, what, new = verdict["parent"], f"parent {verdict['against']}", "new "
    else:
        reference, what, new = verdict["base"], "base", ""
    if verdict["kind"] == "qa":
        return (
            f"held-in recall on {n} {new}training questions: module F1 {module['f1']:.2f} (EM {module['em']:.2f}) "
            f"vs {what} F1 {reference['f1']:.2f} (EM {reference['em']:.2f})"
        )
    return (
        f"held-in loss on {n} {new}training texts: module {module['nll']:.3f} vs {what} {reference['nll']:.3f} "
        "nats/token"
    )


@torch.inference_mode()
def _mean_nll(model: torch.nn.Module, tokenizer, texts: list[str]) -> float:
    """Mean next-token loss per token over the first MAX_TEXT_TOKENS tokens of each text."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :MAX_TEXT_TOKENS].to(device)
        if ids.shape[1] < 2:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logprobs = logits[0, :-1].float().log_softmax(-1)
        total -= float(logprobs.gather(-1, ids[0, 1:, None]).sum())
        count += ids.shape[1] - 1
    return total / max(1, count)
