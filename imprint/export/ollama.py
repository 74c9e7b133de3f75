"""`imprint export --format ollama`: a directory Ollama builds a model from (`ollama create NAME -f Modelfile`): the
merged model as `model.gguf` and a `Modelfile` that asks in the prompt format the module was trained on and stops
where imprint's answers stop.

The Modelfile follows Ollama's own parser: values are not unescaped, so a newline stop string is written as a real
newline inside quotes (as `ollama show --modelfile` writes one), never as the two characters backslash and n.
Ollama cannot forbid a blank first token as imprint does (`imprint.inference.rows.blank_ids`): a model that opens
its answer with a newline answers nothing there.
"""

from __future__ import annotations

from imprint.errors import ImprintError
from imprint.inference.rows import ANSWER_STOPS
from imprint.prompts import qa_prompt

GGUF_NAME = "model.gguf"
PLAIN = "plain"  # `Question: ...\nAnswer:`, the format of base-model modules (imprint.prompts.qa_prompt)


def _quote(value: str) -> str:
    if '"""' in value:
        raise ImprintError(f"cannot write {value!r} into a Modelfile: it holds a triple quote")
    return f'"""{value}"""' if '"' in value else f'"{value}"'


def modelfile(label: str, prompt_format: str = PLAIN) -> str:
    """The Modelfile text for module `label` (`name@version`) trained with `prompt_format`."""
    if prompt_format != PLAIN:
        raise ImprintError(f"module {label} was trained with the {prompt_format} prompt format: imprint writes "
                           "Ollama templates for the plain Question/Answer format only")  # fmt: skip
    lines = [
        f"# imprint module {label}: ollama create {label.replace('@', '-v')} -f Modelfile",
        f"FROM ./{GGUF_NAME}",
        f"TEMPLATE {_quote(qa_prompt('{{ .Prompt }}'))}",
        *(f"PARAMETER stop {_quote(stop)}" for stop in ANSWER_STOPS),
        "PARAMETER temperature 0",
    ]
    return "\n".join(lines) + "\n"
