"""What a module made the base model forget, measured without any external data (and with it, when given).

Self-retention: the base model samples continuations of general prompts (held out from the training replay
prompts, with another seed; cached per base model like replay samples). Every system's weights then score those
exact token sequences:

- `nll`: mean negative log-likelihood per sampled token. Samples are drawn at temperature 1 from the base, so
  `nll(module) - nll(base)` estimates the per-token KL divergence KL(base || module) on general text: how far
  training moved the model where the corpus says nothing.
- `top1_agreement`: the fraction of positions where the module's most likely next token is the base's.

A user's general benchmark in the eval-set format (`split: retain`, e.g. NQ-open and MMLU samples) is scored like
the learned questions, before (base) and after (module). lm-evaluation-harness tasks run when `lm_eval` is
importable, with a LoRA module loaded as a PEFT adapter by lm_eval's own `HFLM(peft=...)`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from imprint.models import cache_root, wants_autocast
from imprint.progress import Bar

# General prompts for retention, disjoint from imprint.train.replay.PROMPTS (tested): a module trained with
# replay must not be graded on the prompts it replayed.
RETENTION_PROMPTS = [
    "The causes of the First World War",
    "Cells divide by",
    "The Pythagorean theorem states",
    "To bake bread at home,",
    "The Sahara Desert",
    "Light travels at",
    "The American Civil War",
    "An operating system manages",
    "The human brain",
    "Charles Dickens",
    "The capital of Australia",
    "Magnetism is",
    "When learning to play the piano,",
    "Saturn's rings",
    "The Nile river",
    "Regular exercise",
    "Plate tectonics explains",
    "In finance, an interest rate",
    "The pyramids of Giza",
    "Antibiotics are",
    "The Atlantic Ocean",
    "A sonnet has",
    "The steam engine",
    "Friction is a force",
    "Question: What is the largest planet in the solar system?\nAnswer:",
    "Question: Who wrote Pride and Prejudice?\nAnswer:",
    "Question: How many legs does a spider have?\nAnswer:",
    "Question: What is the chemical symbol for gold?\nAnswer:",
    "To whom it may concern,",
    "It was a dark and stormy night",
    "The stock market",
    "for i in range(10):",
]


def _cache_file(model_name: str, n: int, max_new_tokens: int, seed: int, kind: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_")[-80:]
    return cache_root() / kind / f"{safe}-n{n}-t{max_new_tokens}-s{seed}.jsonl"


def retention_samples(
    base, n: int = 32, max_new_tokens: int = 64, seed: int = 1234, prompts=None, kind: str = "retention"
) -> list[dict]:
    """The base model's own samples (temperature 1, no top-k or top-p reshaping; prompt i drawn with seed + i) on
    held-out general prompts: `{prompt, prompt_ids, sample_ids, text}`, up to the first stop token.

    Cached per base model and settings, so every eval of modules on this base scores the same sequences.
    `prompts` (default `RETENTION_PROMPTS`) and `kind` (the cache folder) let training watch its own drift on
    another held-out set (`imprint.train.replay.WATCH_PROMPTS`), never on the prompts eval grades.
    """
    from imprint.inference import Row, Sampling, generate, stop_token_ids

    path = _cache_file(base.name, n, max_new_tokens, seed, kind)
    if path.exists():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    model, tokenizer = base.model, base.tokenizer
    prompts = prompts or RETENTION_PROMPTS
    prompts = [prompts[i % len(prompts)] for i in range(n)]
    stop_ids = stop_token_ids(tokenizer, model)
    rows = [Row(tokenizer(p)["input_ids"], Sampling(max_new_tokens, 1.0, 1.0, seed=seed + i), stop_ids)
            for i, p in enumerate(prompts)]  # fmt: skip
    with Bar("retention samples", unit="prompts") as bar:
        generate(model, tokenizer, rows, progress=bar.update)
    samples = [{"prompt": p, "prompt_ids": r.prompt_ids, "sample_ids": r.ids, "text": r.text}
               for p, r in zip(prompts, rows, strict=True) if r.ids]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    tmp.replace(path)
    return samples


@torch.inference_mode()
def score_samples(model, samples: list[dict]) -> dict:
    """Per-token log-likelihood of each sample and the model's top-1 next token at each sampled position."""
    model.eval()
    device = next(model.parameters()).device
    nll_sum, n_tokens, top1, per_sample = 0.0, 0, [], []
    for s in samples:
        ids = torch.tensor([s["prompt_ids"] + s["sample_ids"]], device=device)
        keep = len(s["sample_ids"]) + 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=keep).logits
        logprobs = logits[0, -keep:-1].float().log_softmax(-1)  # positions predicting each sampled token
        target = torch.tensor(s["sample_ids"], device=logprobs.device)
        nll = -float(logprobs.gather(-1, target.unsqueeze(-1)).sum())
        nll_sum += nll
        per_sample.append(nll)
        n_tokens += len(s["sample_ids"])
        top1.append(logprobs.argmax(-1).cpu())
    return {"nll": nll_sum / max(1, n_tokens), "tokens": n_tokens, "top1": top1, "nll_per_sample": per_sample}


def compare_to_base(scored: dict, base_scored: dict) -> dict:
    """NLL, its change from the base (the KL estimate), and top-1 next-token agreement with the base, each with a
    standard error over samples (a sample's tokens are not independent of each other: the sample is the unit)."""
    from imprint.evaluate.metrics import ratio_standard_error

    agree = [int((a == b).sum()) for a, b in zip(scored["top1"], base_scored["top1"], strict=True)]
    lengths = [len(a) for a in base_scored["top1"]]
    total = sum(lengths)
    deltas = [m - b for m, b in zip(scored["nll_per_sample"], base_scored["nll_per_sample"], strict=True)]
    se = {
        "top1_agreement_se": ratio_standard_error(agree, lengths),
        "nll_delta_se": ratio_standard_error(deltas, lengths),
    }
    return {
        "nll": round(scored["nll"], 4),
        "nll_delta": round(scored["nll"] - base_scored["nll"], 4),
        "top1_agreement": round(sum(agree) / max(1, total), 4),
        **{k: None if v is None else round(v, 4) for k, v in se.items()},
        "samples": len(lengths),
        "tokens": scored["tokens"],
    }


def lm_eval_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def run_lm_eval(
    pretrained: str, adapter: str | None, tasks: list[str], limit: int | None = None, include_path: str | None = None
) -> dict:
    """Run lm-evaluation-harness tasks on a base model directory, with a PEFT adapter directory when given.

    `include_path` is a folder of the user's own task YAMLs (e.g. a local JSONL wrapped as a task, for machines
    that cannot download the harness's datasets).

    Returns `{task: {metric: value}}`, or `{"skipped": reason}` when the harness is not installed. The adapter is
    passed as lm_eval's own `peft=` argument, so the harness (not imprint) loads it: a fine-tuned score equal to
    the base's then means the module changed nothing, not that it was never attached.
    """
    if not lm_eval_available():
        return {"skipped": "lm-evaluation-harness is not installed (pip install lm-eval)"}
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    kwargs = {"pretrained": pretrained, "dtype": "auto", "batch_size": 8, "device": "cpu"}  # as saved
    if torch.cuda.is_available():
        kwargs["device"] = "cuda"
    if adapter:
        kwargs["peft"] = adapter
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        from imprint.errors import ImprintError

        raise ImprintError(f"unknown lm-evaluation-harness task(s): {', '.join(unknown)}")
    results = simple_evaluate(model=HFLM(**kwargs), tasks=tasks, limit=limit, task_manager=manager)["results"]
    return {
        task: {k: round(v, 4) for k, v in metrics.items() if isinstance(v, int | float) and "stderr" not in k}
        for task, metrics in results.items()
    }
