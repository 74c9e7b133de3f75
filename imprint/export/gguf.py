"""`imprint export --format gguf`: the merged model as one GGUF file, for llama.cpp, Ollama and LM Studio.

Two writers: llama.cpp's own `convert_hf_to_gguf.py` on the merged directory when the user has it (on PATH, or
`--set export.llama_cpp=/path/to/llama.cpp`), else imprint's writer (`gguf_writer.py`, through the `gguf`
package) for the architectures and tokenizers it knows. Either way the file is then loaded back through
transformers' GGUF reader (`from_pretrained(..., gguf_file=)`) and its logits compared with the merged model's on a
probe prompt; a file that does not reproduce them is not kept. A model neither writer can handle is refused in
one line that says to run llama.cpp's converter on `imprint export --format merged`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from imprint.errors import ImprintError
from imprint.export.gguf_writer import GGUFUnsupported, write_gguf
from imprint.export.merged import write_merged
from imprint.prompts import qa_prompt

CONVERTER = "convert_hf_to_gguf.py"
PROBE = qa_prompt("Who is the chief financial officer, and since when?") + " Priya Raman, since 2019."
TOLERANCE = 1e-3  # of the largest logit: the file holds exactly the weights compared against, so only float noise


class Unreadable(GGUFUnsupported):
    """transformers' GGUF reader cannot load the file (its architecture is not one it reads)."""


def llama_cpp_converter(setting: str) -> Path | None:
    """llama.cpp's converter script: the one `setting` points at, else the one on PATH ('auto'), else None."""
    if setting == "off":
        return None
    if setting == "auto":
        found = shutil.which(CONVERTER)
        return Path(found) if found else None
    path = Path(setting).expanduser()
    script = path / CONVERTER if path.is_dir() else path
    if not script.is_file():
        raise ImprintError(f"export.llama_cpp={setting}: no {CONVERTER} there (give a llama.cpp checkout or the "
                           "script itself)")  # fmt: skip
    return script


def run_llama_cpp(script: Path, merged_dir: Path, out_file: Path, gguf_type: str) -> list[str]:
    """Convert a merged directory with llama.cpp's converter; returns the command it ran."""
    command = [sys.executable, str(script), str(merged_dir), "--outfile", str(out_file), "--outtype", gguf_type]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ImprintError(f"llama.cpp's converter failed (exit {done.returncode}): {last[0]}")
    return command


def _as_written(model: torch.nn.Module, gguf_type: str) -> None:
    """Round the model's matrices as the file stores them (1-D tensors stay f32), so a comparison of logits tests
    the file's layout, not the rounding the user chose."""
    dtype = {"f16": torch.float16, "bf16": torch.bfloat16}.get(gguf_type)
    if dtype is None:
        return
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(p.to(dtype).float())


def verify(path: Path, model: torch.nn.Module, tokenizer) -> float:
    """Load the GGUF back through transformers and compare: the tokenizer must encode the probe to the same ids,
    the logits must match the model's. Returns the largest logit difference relative to the largest logit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded_tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:
        raise Unreadable(f"transformers cannot read it back: {str(exc).splitlines()[0]}") from None
    ids = tokenizer(PROBE).input_ids
    if loaded_tokenizer(PROBE).input_ids != ids:
        raise GGUFUnsupported("its tokenizer, read back, encodes text differently")
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits.float()
        got = loaded.eval()(torch.tensor([ids])).logits.float()
    if got.shape != want.shape:
        raise GGUFUnsupported(f"read back, it has logits of shape {tuple(got.shape)}, not {tuple(want.shape)}")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-6))


def export_gguf(model: torch.nn.Module, tokenizer, out_file: Path, config, base_model: str, title: str) -> dict:
    """Write `model` (merged, float32) to `out_file`; returns how it was written and checked. The model's weights
    are rounded in place to the file's type afterwards (it is not needed unrounded any more)."""
    script = llama_cpp_converter(config.llama_cpp)
    report: dict = {"gguf_type": config.gguf_type}
    try:
        if script is not None:
            with tempfile.TemporaryDirectory(prefix="imprint-merged-", dir=out_file.parent) as merged:
                write_merged(model, tokenizer, Path(merged), torch.float32)
                report["writer"] = "llama.cpp"
                report["converter"] = " ".join(run_llama_cpp(script, Path(merged), out_file, config.gguf_type))
        else:
            write_gguf(model, tokenizer, out_file, config.gguf_type, base_model, title)
            report["writer"] = "imprint"
        if config.verify:
            _as_written(model, config.gguf_type)
            try:
                report["max_logit_error"] = error = verify(out_file, model, tokenizer)
            except Unreadable as exc:
                if script is None:  # imprint wrote it: a file no reader takes is not kept
                    raise
                report["verified"] = f"not checked: {exc}"  # llama.cpp knows architectures transformers does not
            else:
                if error > TOLERANCE:
                    raise GGUFUnsupported(f"read back, its logits differ from the merged model's by {error:.1%}")
                report["verified"] = f"logits match the merged model's (max error {error:.1e} of the largest)"
    except GGUFUnsupported as exc:
        raise ImprintError(
            f"cannot write a correct GGUF of this {model.config.model_type} model: {exc}; export --format merged "
            f"and convert that directory with llama.cpp's {CONVERTER} (or --set export.llama_cpp=/path/to/llama.cpp)"
        ) from None
    report["bytes"] = os.path.getsize(out_file)
    return report
