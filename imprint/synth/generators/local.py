"""The `local` generator: a Hugging Face causal LM in this process, generating a batch of prompts at once.

The default is the embedded base model (`gemma-3-270m`), so synthesis works offline with nothing to install;
any local model directory works too (`--set generator.model=/path`). Prompts are left-padded and batched in
order of length (less padding), sampled with a seed, and stopped per row at the first stop string, as
`imprint/answer.py` does for answers (same dtype and autocast rules).
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from imprint.models import load_base, wants_autocast
from imprint.synth.generators import GeneratorConfig, GeneratorError, cut_at_stop


class _StopStrings(StoppingCriteria):
    """Marks a row done once its new text contains a stop string; decodes only the last few tokens per step."""

    def __init__(self, tokenizer, stop: list[str], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, [s for s in stop if s], prompt_len
        self.window = max((len(s) for s in self.stop), default=0) + 8  # tokens hold >= 1 character

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stop:
            return done
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        for row, tail in enumerate(tails):
            done[row] = any(s in tail for s in self.stop)
        return done


class LocalGenerator:
    def __init__(self, config: GeneratorConfig | None = None, default_model: str = "", base=None):
        self.config = config or GeneratorConfig()
        self.base = base or load_base(self.config.model or default_model or "gemma-3-270m")
        self.name = f"local:{self.base.name}"
        self.batch_size = self.config.batch_size
        self.context = getattr(self.base.model.config, "max_position_embeddings", None)

    @torch.inference_mode()
    def generate(self, prompts, max_tokens, temperature, stop=None, seed=None) -> list[str]:
        model, tokenizer = self.base.model, self.base.tokenizer
        model.eval()
        device = next(model.parameters()).device
        stop = list(stop or [])
        lengths = [len(tokenizer.encode(p)) for p in prompts]
        if self.context and max(lengths, default=0) + max_tokens > self.context:
            raise GeneratorError(
                f"a prompt of {max(lengths)} tokens plus {max_tokens} new ones exceeds {self.name}'s context of "
                f"{self.context}: use smaller chunks (imprint add) or a model with a longer context"
            )
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out: list[str] = [""] * len(prompts)
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                enc = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True).to(device)
                if seed is not None:
                    torch.manual_seed(seed + start)
                sampling = {"do_sample": False}
                if temperature > 0:
                    sampling = {"do_sample": True, "temperature": temperature, "top_k": self.config.top_k}
                    sampling["top_p"] = self.config.top_p
                width = enc["input_ids"].shape[1]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wants_autocast(model)):
                    sequences = model.generate(
                        **enc,
                        max_new_tokens=max_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        stopping_criteria=StoppingCriteriaList([_StopStrings(tokenizer, stop, width)]),
                        **sampling,
                    )
                texts = tokenizer.batch_decode(sequences[:, width:], skip_special_tokens=True)
                for i, text in zip(rows, texts, strict=True):
                    out[i] = cut_at_stop(text, stop)
        finally:
            tokenizer.padding_side = side
        return out
