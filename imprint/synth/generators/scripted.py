"""A deterministic generator shipped as real code (as mini-swe-agent's `DeterministicModel`): tests and dry runs.

Its completions come from a script: a function of the prompt, or a list of completions served in order. It
honours stop strings like a real backend, counts calls, and can be told to fail after N prompts, which is how
the tests interrupt a synthesis run half way and check that the next run resumes without duplicates or gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imprint.synth.generators import GeneratorError, cut_at_stop


class ScriptedGenerator:
    def __init__(
        self,
        script: Callable[[str], str] | Sequence[str],
        name: str = "scripted",
        fail_after: int | None = None,
    ):
        self.script = script
        self.name = name
        self.fail_after = fail_after
        self.prompts: list[str] = []  # every prompt answered, in order
        self.calls = 0  # generate() calls
        self.batch_size = 8

    def generate(self, prompts, max_tokens, temperature, stop=None, seed=None) -> list[str]:
        self.calls += 1
        out = []
        for prompt in prompts:
            if self.fail_after is not None and len(self.prompts) >= self.fail_after:
                raise GeneratorError(f"scripted generator stopped after {self.fail_after} prompts")
            if callable(self.script):
                text = self.script(prompt)
            else:
                text = self.script[len(self.prompts) % len(self.script)]
            self.prompts.append(prompt)
            out.append(cut_at_stop(text, stop))
        return out
