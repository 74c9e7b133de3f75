"""`imprint export --format gguf`: imprint's writer produces a GGUF that transformers' own GGUF reader loads back
(`gguf_file=`) with the logits of base+module and the same tokenizer, for Llama, Qwen2 and Qwen3 models; an architecture
or layout it cannot write correctly is refused in one line naming llama.cpp's converter; llama.cpp's converter is
run on the merged directory when the user points at it."""

import json
import sys

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

PROBE = qa_prompt("Where did the Lisbon office open, and when?") + " In 2021."
# of the largest logit: f32 is exact up to float noise (5e-6 measured); f16/bf16 add the rounding of the weights
# (measured 5e-3 and 3e-2 on these wide-initialised tiny models), which imprint's own check factors out
RELATIVE = {"f32": 5e-5, "f16": 2e-2, "bf16": 1e-1}


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


@pytest.mark.parametrize(
    ("spec", "gguf_type"), [("l", "f32"), ("l", "f16"), ("q", "f32"), ("q", "bf16"), ("q3", "f32")]
)
def test_gguf_loads_back_with_the_logits_of_base_plus_lora(export_ws, tmp_path, spec, gguf_type):
    ws = Workspace.open(export_ws)
    config = ExportConfig(gguf_type=gguf_type, llama_cpp="off")
    report = export_module(ws, spec, "gguf", tmp_path / "out", config)
    assert report["writer"] == "imprint" and report["files"] == ["imprint_module.json", f"{spec}-v1.gguf"]
    module, tokenizer, manifest = load_module(ws, spec, dtype=torch.float32)
    read_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out"), gguf_file=f"{spec}-v1.gguf")
    read = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), gguf_file=f"{spec}-v1.gguf").eval()
    ids = tokenizer(PROBE).input_ids
    assert read_tokenizer(PROBE).input_ids == ids and read_tokenizer.decode(ids, skip_special_tokens=True) == PROBE
    want, got = logits(module.eval(), ids), logits(read, ids)
    base = logits(load_base(manifest["base_model"], dtype=torch.float32).model, ids)
    scale = want.abs().max()
    assert (got - want).abs().max() <= RELATIVE[gguf_type] * scale
    assert (base - want).abs().max() >= 0.05 * scale  # the LoRA is in there
    assert report["max_logit_error"] <= 1e-5  # imprint's own check, against the weights as rounded in the file


def test_a_layout_the_readers_would_get_wrong_is_refused(export_ws, tmp_path, capsys):
    """The tiny Gemma-3 has a global layer where Gemma 3 GGUF readers assume a local one: refused, not written."""
    argv = ["--workspace", str(export_ws), "export", "g", "--format", "gguf", "--out", str(tmp_path / "g"),
            "--set", "export.llama_cpp=off"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot write a correct GGUF of this gemma3_text model" in err
    assert "export --format merged and convert that directory with llama.cpp's convert_hf_to_gguf.py" in err
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_reads_back_wrong_is_not_kept(tmp_path):
    """This transformers' GGUF reader ignores a Qwen3 file's head width and assumes 128: a narrower Qwen3 is
    written, read back wrong by the check, and refused; nothing is left behind."""
    from export_models import base_dir, register

    ws = Workspace.open(tmp_path / "ws")
    register(ws, "n", "lora", str(base_dir(tmp_path, "qwen3-narrow")), {"r": 4, "alpha": 8}, seed=8)
    with pytest.raises(ImprintError, match="cannot write a correct GGUF of this qwen3 model: transformers cannot read"):
        export_module(ws, "n", "gguf", tmp_path / "out", ExportConfig(llama_cpp="off"))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))


CONVERTER = """import json, pathlib, sys
pathlib.Path(sys.argv[0]).with_name("argv.json").write_text(json.dumps(
    {"argv": sys.argv[1:], "merged": sorted(p.name for p in pathlib.Path(sys.argv[1]).iterdir())}))
if "{fail}" == "yes":
    sys.exit("error: this model is not supported")
pathlib.Path(sys.argv[3]).write_bytes(b"GGUF from a stand-in converter")
"""


def test_llama_cpp_converter_runs_on_the_merged_directory(export_ws, tmp_path, capsys):
    """A stand-in for llama.cpp's converter (not installed here) records how it is called: on a complete merged
    directory, writing the file imprint names; a file transformers cannot read back is kept, marked unchecked."""
    checkout = tmp_path / "llama.cpp"
    checkout.mkdir()
    (checkout / "convert_hf_to_gguf.py").write_text(CONVERTER.replace("{fail}", "no"))
    argv = ["--workspace", str(export_ws), "export", "l", "--format", "gguf", "--out", str(tmp_path / "out"),
            "--set", f"export.llama_cpp={checkout}"]  # fmt: skip
    assert main(argv) == 0
    assert "GGUF written by llama.cpp: not checked: transformers cannot read it back" in capsys.readouterr().out
    called = json.loads((checkout / "argv.json").read_text())
    assert called["argv"][1:] == ["--outfile", called["argv"][2], "--outtype", "f16"]
    assert called["argv"][2].endswith("/l-v1.gguf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(called["merged"])
    assert (tmp_path / "out" / "l-v1.gguf").read_bytes() == b"GGUF from a stand-in converter"
    assert sys.executable  # the converter runs under this interpreter


def test_llama_cpp_failures_are_one_line(export_ws, tmp_path, capsys):
    checkout = tmp_path / "llama.cpp"
    checkout.mkdir()
    (checkout / "convert_hf_to_gguf.py").write_text(CONVERTER.replace("{fail}", "yes"))
    out = tmp_path / "out"
    with pytest.raises(ImprintError, match=r"converter failed \(exit 1\): error: this model is not supported"):
        export_module(Workspace.open(export_ws), "l", "gguf", out, ExportConfig(llama_cpp=str(checkout)))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["llama.cpp"]
    with pytest.raises(ImprintError, match="no convert_hf_to_gguf.py there"):
        export_module(Workspace.open(export_ws), "l", "gguf", out, ExportConfig(llama_cpp=str(tmp_path / "none")))


@pytest.mark.slow
def test_embedded_gemma_module_exports_to_a_gguf_that_reads_back_exactly(tmp_path):
    """The default model: a LoRA module on gemma-3-270m as an f16 GGUF (its SentencePiece vocabulary copied from the
    GGUF the model ships in), read back by transformers with the merged model's logits (~5 min on 2 cores)."""
    import gguf
    from export_models import register

    ws = Workspace.open(tmp_path / "ws")
    register(ws, "e", "lora", "gemma-3-270m", {"r": 4, "alpha": 8, "target_modules": "q_proj,v_proj"}, seed=4)
    report = export_module(ws, "e", "gguf", tmp_path / "out", ExportConfig(llama_cpp="off"))
    assert report["writer"] == "imprint" and report["max_logit_error"] <= 1e-5
    reader = gguf.GGUFReader(str(tmp_path / "out" / "e-v1.gguf"))
    assert reader.fields["general.architecture"].contents() == "gemma3"
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama" and "output.weight" not in {
        t.name for t in reader.tensors
    }
