"""`imprint export`: a module in the forms other tools load.

- `peft`, `vllm`: a LoRA module as a standard PEFT adapter directory (`imprint.methods.lora.export`).
- `merged`: the module folded into its base, a plain Hugging Face model directory (`merged.py`).
- `gguf`: that merged model as one GGUF file for llama.cpp (`gguf.py`).
- `ollama`: the GGUF plus a Modelfile in the module's prompt format (`ollama.py`).

Every export writes `imprint_module.json` (the module's manifest) beside the weights, and is written all at once
(`files.py`): a failed export leaves nothing behind. `prompt_format()` is what the CLI prints after each one: a
module answers only in the format it was trained with.
"""

from __future__ import annotations

from pathlib import Path

from imprint.errors import ImprintError
from imprint.export.config import ExportConfig
from imprint.export.files import check_out, staged, write_manifest
from imprint.inference.rows import ANSWER_STOPS
from imprint.prompts import qa_prompt

__all__ = ["FORMATS", "ExportConfig", "export_module", "prompt_format"]

FORMATS = ("peft", "vllm", "merged", "gguf", "ollama")


def prompt_format() -> dict:
    """How to ask a module: the prompt around the question, where the answer ends, and greedy decoding."""
    return {"prompt": qa_prompt("{question}"), "stop": list(ANSWER_STOPS), "temperature": 0}


def export_module(ws, spec: str, fmt: str, out: Path | str, config: ExportConfig | None = None) -> dict:
    """Export module `spec` (`name` or `name@N`) as `fmt` into the new directory `out`; returns what was written
    (files, and per format: the serve command, the GGUF writer and its check, the `ollama create` command)."""
    if fmt not in FORMATS:
        raise ImprintError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt in ("peft", "vllm"):
        from imprint.methods.lora import export as lora_export

        return {**lora_export.export_module(ws, spec, fmt, out), "prompt_format": prompt_format()}
    from imprint.export import merged

    config = config or ExportConfig()
    entry = ws.module(spec)
    label = f"{entry.name}@{entry.version}"
    merged.check_mergeable(entry)  # before loading anything
    out = check_out(out)
    report = {"module": label, "format": fmt, "out": str(out), "base_model": entry.base_model,
              "prompt_format": prompt_format()}  # fmt: skip
    model, tokenizer = merged.merged_model(ws, entry)
    with staged(out) as staging:
        if fmt == "merged":
            dtype = merged.save_dtype(entry, config.dtype)
            merged.write_merged(model, tokenizer, staging, dtype)
            report["dtype"] = str(dtype).removeprefix("torch.")
        else:
            from imprint.export.gguf import export_gguf
            from imprint.export.ollama import GGUF_NAME, modelfile

            name = GGUF_NAME if fmt == "ollama" else f"{entry.name}-v{entry.version}.gguf"
            report.update(export_gguf(model, tokenizer, staging / name, config, entry.base_model, label))
            report["gguf"] = str(out / name)
            if fmt == "ollama":
                text = modelfile(label, entry.manifest.get("prompt_format", "plain"))
                (staging / "Modelfile").write_text(text)
                report["command"] = f"ollama create {entry.name}-v{entry.version} -f {out / 'Modelfile'}"
        write_manifest(staging, entry.manifest, exported_as=fmt, prompt_format=prompt_format())
    report["files"] = sorted(p.name for p in out.iterdir())
    return report
