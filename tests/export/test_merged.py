"""`imprint export --format merged`: the module folded into its base is a plain Hugging Face model directory whose
logits are the base+module's (LoRA via `merge_and_unload`, a full fine-tune's tensors written in); prefix modules
are refused in one line and leave nothing behind."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from imprint.cli import main
from imprint.errors import ImprintError
from imprint.export import ExportConfig, export_module
from imprint.methods.loading import load_module
from imprint.models import load_base
from imprint.prompts import qa_prompt
from imprint.workspace import Workspace

PROBE = qa_prompt("Who is the chief financial officer?") + " Priya Raman"


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer(PROBE).input_ids])).logits.float()


@pytest.mark.parametrize("spec", ["g", "l", "gfull", "lfull"])
def test_merged_model_has_the_logits_of_base_plus_module(export_ws, tmp_path, spec):
    ws = Workspace.open(export_ws)
    report = export_module(ws, spec, "merged", tmp_path / spec)
    files = set(report["files"])
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files
    assert not any(f.startswith("adapter_") or f.startswith("full_") for f in files)
    assert json.loads((tmp_path / spec / "imprint_module.json").read_text())["exported_as"] == "merged"
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / spec)).eval()  # no PEFT, no imprint
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / spec))
    module, original_tokenizer, manifest = load_module(ws, spec, dtype=torch.float32)
    assert tokenizer(PROBE).input_ids == original_tokenizer(PROBE).input_ids
    want, got = logits(module.eval(), original_tokenizer), logits(merged, tokenizer)
    base = logits(load_base(manifest["base_model"], dtype=torch.float32).model, original_tokenizer)
    scale = want.abs().max()
    assert (got - want).abs().max() <= 1e-5 * scale  # folding W + BA in float32: rounding noise only
    assert (base - want).abs().max() >= 0.05 * scale  # and the module visibly changed the base
    assert report["dtype"] == "float32"  # `auto`: the tiny bases are float32, full fine-tunes always are


def test_dtype_setting_and_printed_instructions(export_ws, tmp_path, capsys):
    argv = ["--workspace", str(export_ws), "export", "l", "--format", "merged", "--out", str(tmp_path / "m"),
            "--set", "export.dtype=bfloat16"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "as a merged bfloat16 model" in out and "from_pretrained" in out
    assert "'Question: {question}\\nAnswer:'" in out and "'\\n' or 'Question:'" in out  # the prompt format
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"), dtype="auto")
    assert merged.dtype == torch.bfloat16


def test_prefix_module_has_no_merged_form(export_ws, tmp_path, capsys):
    ws = Workspace.open(export_ws)
    for fmt in ("merged", "gguf", "ollama"):
        with pytest.raises(ImprintError, match="prefix module and has no merged form .*KV prefix"):
            export_module(ws, "gprefix", fmt, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()
    argv = ["--workspace", str(export_ws), "export", "gprefix", "--format", "merged", "--out", str(tmp_path / "x")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imprint: error: module gprefix@1 is a prefix module") and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # no staging directory left either


def test_bad_settings_and_existing_directories_are_refused(export_ws, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ImprintError, match="not an empty directory"):
        export_module(Workspace.open(export_ws), "l", "merged", tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    argv = ["--workspace", str(export_ws), "export", "l", "--format", "merged", "--out", str(tmp_path / "y"),
            "--set", "export.dtype=int8"]  # fmt: skip
    assert main(argv) == 1
    assert "dtype must be one of auto, float32, bfloat16, float16" in capsys.readouterr().err
    with pytest.raises(ImprintError, match="unknown export format 'onnx'"):
        export_module(Workspace.open(export_ws), "l", "onnx", tmp_path / "z")
    assert ExportConfig().dtype == "auto"
