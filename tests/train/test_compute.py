"""How a micro-batch computes: compiled decoder layers give eager's loss and gradients and are restored after
training; bf16 autocast is chosen for fp32 trainables on a bf16 base; `auto` compiles only where it pays."""

import pytest
import torch

from imprint.errors import ImprintError
from imprint.methods.lora.config import LoraMethodConfig
from imprint.methods.lora.method import LoraMethod
from imprint.models import preferred_dtype
from imprint.synth.records import SynthRecord
from imprint.testing import tiny_lm
from imprint.train.compute import MicroStep, decoder_layers, uses_autocast, wants_compile
from imprint.train.config import TrainConfig
from imprint.train.data import collate_packed, encode_record

RECORDS = [
    SynthRecord.make("rules", [], "qa", question="Who leads finance?", answer="Priya Raman"),
    SynthRecord.make("rules", [], "text", text="Priya Raman has served as chief financial officer since 2019."),
]


def lora_tiny(dtype=torch.float32):
    model, tok = tiny_lm()
    torch.manual_seed(0)
    lora = LoraMethod().attach(model.to(dtype), LoraMethodConfig(r=4, alpha=8))
    with torch.no_grad():  # non-zero B so adapter gradients flow everywhere
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return lora, tok


def grads_of(model, config, batch):
    with MicroStep(model, config, steps=1) as step:
        loss, n = step(batch)
        compiled = [layer for layer in decoder_layers(model) if "forward" in vars(layer)]
        attention = model.get_base_model().config._attn_implementation
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss, n, grads, compiled, attention


@pytest.mark.slow  # compiling even the tiny model's layers takes minutes on 2 shared cores
def test_compiled_layers_compute_what_eager_layers_compute_and_are_restored():
    model, tok = lora_tiny()
    assert model.get_base_model().config._attn_implementation == "sdpa"
    batch = collate_packed([[encode_record(r, tok, 128) for r in RECORDS]], tok.pad_token_id)
    eager = grads_of(model, TrainConfig(compile="off", autocast=False), batch)
    compiled = grads_of(model, TrainConfig(compile="on", autocast=False), batch)
    assert eager[3] == [] and len(compiled[3]) == len(decoder_layers(model))
    assert not any("forward" in vars(layer) for layer in decoder_layers(model))  # restored on exit
    assert (eager[4], compiled[4]) == ("sdpa", "eager")  # compiled layers fuse eager attention's softmax
    assert model.get_base_model().config._attn_implementation == "sdpa"  # and SDPA is back for answering
    assert compiled[1] == eager[1]
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-5)
    for name, grad in eager[2].items():
        torch.testing.assert_close(compiled[2][name], grad, rtol=1e-3, atol=1e-5)


def test_autocast_for_fp32_adapters_on_a_bf16_base_only(monkeypatch):
    monkeypatch.setenv("IMPRINT_PRECISION", "auto")  # the hardware's own choice (the suite pins fp32)
    on_bf16, _ = lora_tiny(torch.bfloat16)
    on_fp32, _ = lora_tiny(torch.float32)
    bf16_hardware = preferred_dtype() == torch.bfloat16
    assert uses_autocast(on_bf16, TrainConfig()) == bf16_hardware
    assert not uses_autocast(on_bf16, TrainConfig(autocast=False))
    assert not uses_autocast(on_fp32, TrainConfig())


def test_auto_compiles_long_runs_on_large_models_only():
    tiny, _ = lora_tiny()
    assert not wants_compile(tiny, TrainConfig(), steps=1000)
    assert wants_compile(tiny, TrainConfig(compile="on"), steps=1)
    assert not wants_compile(tiny, TrainConfig(compile="off"), steps=1000)


def test_precision_can_be_pinned(monkeypatch):
    monkeypatch.setenv("IMPRINT_PRECISION", "fp32")
    assert preferred_dtype() == torch.float32
    monkeypatch.setenv("IMPRINT_PRECISION", "bf16")
    assert preferred_dtype() == torch.bfloat16
    monkeypatch.setenv("IMPRINT_PRECISION", "fp16")
    with pytest.raises(ImprintError, match="IMPRINT_PRECISION='fp16': use one of auto, fp32, bf16"):
        preferred_dtype()
