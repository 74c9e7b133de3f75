"""`imprint export` (`imprint.methods.lora.export`): LoRA modules become standard PEFT adapter directories that plain
PEFT loads with identical logits, checked against vLLM's rules for the vllm format; other methods and existing
directories are refused."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from imprint.cli import main
from imprint.errors import ImprintError
from imprint.methods.loading import load_module
from imprint.methods.lora.export import export_module, vllm_problems
from imprint.testing import tiny_lm, tiny_tokenizer
from imprint.workspace import Workspace


def test_peft_export_loads_in_plain_peft_with_identical_logits(ws_dir, tmp_path):
    ws = Workspace.open(ws_dir)
    report = export_module(ws, "alpha@1", "peft", tmp_path / "alpha")
    assert report["files"] == ["adapter_config.json", "adapter_model.safetensors", "imprint_module.json"]
    assert json.loads((tmp_path / "alpha" / "imprint_module.json").read_text())["version"] == 1
    plain = PeftModel.from_pretrained(tiny_lm()[0], str(tmp_path / "alpha")).eval()
    ours, _, _ = load_module(ws, "alpha@1")
    probe = tiny_tokenizer()(["Question: Who is the CFO?\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        exported, original = plain(**probe).logits, ours(**probe).logits
        base = tiny_lm()[0](**probe).logits
    assert torch.equal(exported, original) and not torch.equal(exported, base)


def test_vllm_export_writes_the_serve_command(ws_dir, tmp_path, capsys):
    assert main(["--workspace", str(ws_dir), "export", "beta", "--format", "vllm", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "--enable-lora --max-lora-rank 8 --lora-modules" in out and f"beta={tmp_path / 'b'}" in out
    config = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["peft_type"] == "LORA" and not config.get("modules_to_save")
    names = list(load_file(str(tmp_path / "b" / "adapter_model.safetensors")))
    assert vllm_problems(config, names) == []


def test_vllm_rules():
    names = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert vllm_problems({"r": 8, "lora_alpha": 16}, names) == []
    assert "DoRA" in vllm_problems({"r": 8, "use_dora": True}, names)[0]
    assert "exceeds" in vllm_problems({"r": 1024}, names)[0]
    assert "lm_head" in vllm_problems({"r": 8}, [*names, "base_model.model.lm_head.lora_A.weight"])[0]


def test_refusals_leave_nothing_behind(ws_dir, tmp_path, capsys):
    ws = Workspace.open(ws_dir)
    for spec, method in (("cart", "prefix"), ("whole", "full")):
        with pytest.raises(ImprintError, match=f"{method} module: only LoRA"):
            export_module(ws, spec, "peft", tmp_path / spec)
        assert not (tmp_path / spec).exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ImprintError, match="not an empty directory"):
        export_module(ws, "alpha", "peft", tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    assert main(["--workspace", str(ws_dir), "export", "ghost", "--out", str(tmp_path / "g")]) == 1
    assert "no module 'ghost'" in capsys.readouterr().err


def test_vllm_refuses_adapters_it_cannot_load(ws_dir, tmp_path):
    """An adapter whose tensors include the output head (vLLM adapts projections only) is refused for vllm."""
    shutil.copytree(ws_dir, tmp_path / "ws")  # registers a module: keep the shared workspace as it was
    ws = Workspace.open(tmp_path / "ws")
    entry = ws.get_module("alpha", 1)
    forged = tmp_path / "forged"
    forged.mkdir()
    tensors = load_file(f"{entry.path}/adapter_model.safetensors")
    tensors["base_model.model.lm_head.lora_A.weight"] = torch.zeros(4, 64)
    save_file(tensors, str(forged / "adapter_model.safetensors"))
    (forged / "adapter_config.json").write_text(open(f"{entry.path}/adapter_config.json").read())
    (forged / "manifest.json").write_text(json.dumps({**entry.manifest, "name": "forged", "version": 1}))
    ws.register_module("forged", 1, "lora", "tiny", str(forged), entry.corpus_version, entry.manifest)
    with pytest.raises(ImprintError, match="cannot be served by vLLM.*lm_head"):
        export_module(ws, "forged", "vllm", tmp_path / "out")
    assert export_module(ws, "forged", "peft", tmp_path / "out")["format"] == "peft"
