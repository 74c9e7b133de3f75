"""The `local` generator: a Hugging Face causal LM in this process, through imprint's inference engine.

The default is the embedded base model (`gemma-3-270m`), so synthesis works offline with nothing to install;
any local model directory works too (`--set generator.model=/path`). Up to `batch_size` prompts decode together
(continuous batching: a finished row's place goes to the next prompt); prompt i is sampled with seed + i (as the
`openai` generator asks a server to), and each row stops at its first stop string or stop token.
"""

from __future__ import annotations

from imprint.inference import Row, Sampling, generate, stop_token_ids
from imprint.models import load_base
from imprint.synth.generators import GeneratorConfig, GeneratorError


class LocalGenerator:
    def __init__(self, config: GeneratorConfig | None = None, default_model: str = "", base=None):
        self.config = config or GeneratorConfig()
        self.base = base or load_base(self.config.model or default_model or "gemma-3-270m")
        self.name = f"local:{self.base.name}"
        self.batch_size = self.config.batch_size
        self.context = getattr(self.base.model.config, "max_position_embeddings", None)

    def generate(self, prompts, max_tokens, temperature, stop=None, seed=None) -> list[str]:
        model, tokenizer = self.base.model, self.base.tokenizer
        model.eval()
        ids = [tokenizer(p)["input_ids"] for p in prompts]
        longest = max((len(i) for i in ids), default=0)
        if self.context and longest + max_tokens > self.context:
            raise GeneratorError(
                f"a prompt of {longest} tokens plus {max_tokens} new ones exceeds {self.name}'s context of "
                f"{self.context}: use smaller chunks (imprint add) or a model with a longer context"
            )
        stop_ids = stop_token_ids(tokenizer, model)
        rows = []
        for i, prompt_ids in enumerate(ids):
            sampling = Sampling(max_tokens, temperature, self.config.top_p, tuple(s for s in stop or [] if s),
                                None if seed is None else seed + i, top_k=self.config.top_k)  # fmt: skip
            rows.append(Row(prompt_ids, sampling, stop_ids))
        generate(model, tokenizer, rows, max_batch=self.batch_size)
        return [r.text for r in rows]
