"""Tiny random models of the architectures imprint exports, saved as Hugging Face directories, and modules on them
made with each method's own attach/save (shared by tests/export's fixtures and its slow test)."""

import json

import torch

from imprint import registry
from imprint.testing import tiny_tokenizer


def base_dir(root, family: str):
    """A tiny random `family` model (llama, qwen2, qwen3) saved as a Hugging Face directory under `root`."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tokenizer = tiny_tokenizer()
    shape = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0,
                 eos_token_id=1, bos_token_id=2, initializer_range=0.3)  # fmt: skip
    # Qwen3 with the head width of every Qwen3 release (128): transformers' GGUF reader assumes it
    config, cls = {"llama": (LlamaConfig(**shape, tie_word_embeddings=False), LlamaForCausalLM),
                   "qwen2": (Qwen2Config(**shape, tie_word_embeddings=True), Qwen2ForCausalLM),
                   "qwen3": (Qwen3Config(**shape, head_dim=128, tie_word_embeddings=True), Qwen3ForCausalLM),
                   "qwen3-narrow": (Qwen3Config(**shape, head_dim=32, tie_word_embeddings=True), Qwen3ForCausalLM),
                   }[family]  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = cls(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):  # Qwen2's q/k/v biases start at zero: give them values a writer can lose
                    p.normal_()
    directory = root / family
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def register(ws, name: str, method: str, base_model: str, settings: dict, seed: int) -> None:
    """A module made with the method's own attach/save and random weights (no training time), registered as
    `imprint train` registers one."""
    from imprint.models import load_base

    impl = registry.method(method)()
    base = load_base(base_model, dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = impl.attach(base.model, impl.config_class(**settings), base.tokenizer, "")
        with torch.no_grad():
            for param_name, p in model.named_parameters():
                if method != "lora" or "lora_B" in param_name:  # LoRA B starts at zero: give it a real update
                    p.add_(torch.randn_like(p) * (0.3 if method == "lora" else 0.05))
    version = ws.next_module_version(name)
    directory = ws.module_dir(name, version)
    directory.mkdir(parents=True)
    files = impl.save(model, directory)
    manifest = {"name": name, "version": version, "method": method, "base_model": base_model, "files": files,
                "corpus_version": ws.corpus_version(), "config": {method: settings}, "metrics": {},
                "created_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))
    ws.register_module(name, version, method, base_model, str(directory), manifest["corpus_version"], manifest)
