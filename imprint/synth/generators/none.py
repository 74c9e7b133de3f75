"""The `none` generator: no model at all. Only the rule-based strategies (`rules`, `raw`) run with it."""

from __future__ import annotations

from imprint.synth.generators import GeneratorConfig, GeneratorError


class NoGenerator:
    name = "none"

    def __init__(self, config: GeneratorConfig | None = None, default_model: str = ""):
        self.config = config

    def generate(self, prompts, max_tokens, temperature, stop=None, seed=None) -> list[str]:
        raise GeneratorError("the `none` generator writes nothing: use --generator local or --generator openai")
