"""LoRA through PEFT: attach to every linear layer, save as a standard PEFT adapter that vLLM and PEFT load."""

from __future__ import annotations

from pathlib import Path

import torch

from imprint.methods.lora.config import LoraMethodConfig


class LoraMethod:
    name = "lora"
    config_class = LoraMethodConfig
    default_lr = 1e-3

    def attach(self, model: torch.nn.Module, config: LoraMethodConfig, tokenizer=None, corpus_text: str = ""):
        from peft import LoraConfig, get_peft_model

        targets = config.target_modules
        peft_config = LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, peft_config)

    def save(self, model: torch.nn.Module, directory: Path) -> list[str]:
        model.save_pretrained(str(directory), safe_serialization=True)
        return sorted(p.name for p in directory.iterdir() if p.name.startswith("adapter_"))

    def serving_bytes(self, directory: Path, base) -> int:
        from imprint.inference.modules import file_bytes

        return file_bytes(directory)

    def join(self, host, key: str, directory: Path):
        """Into a served batch: one more adapter in the shared model's LoRA layers; its rows name it."""
        from imprint.inference.modules import Joined

        adapter, nbytes = host.add_lora(directory)
        return Joined(key, self.name, nbytes, adapter=adapter)

    def load(self, model: torch.nn.Module, directory: Path, trainable: bool = False) -> torch.nn.Module:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)
        if not trainable:
            loaded.eval()
        return loaded
