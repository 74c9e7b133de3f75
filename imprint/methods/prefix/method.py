"""Prefix tuning as a trainable KV cache: per layer, `n_tokens` keys and values that every prompt attends to.

The base model stays frozen; only the cache trains (next-token loss through the attention of every layer).
It is initialised from the base model's own keys and values over the first tokens of the corpus, which the
Cartridges paper found far better than random. The cache costs no prompt tokens at answer time, but each
answer attends to `n_tokens` more positions. Note: on sliding-window layers (Gemma-3: 5 of every 6) a prompt
longer than the window minus `n_tokens` no longer sees the prefix there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache

from imprint.methods.prefix.config import PrefixMethodConfig

WEIGHTS = "prefix_cache.safetensors"
CONFIG = "prefix_config.json"


class PrefixModel(torch.nn.Module):
    """A frozen causal LM with a trainable per-layer key/value prefix."""

    def __init__(self, base: torch.nn.Module, keys: list[torch.Tensor], values: list[torch.Tensor]):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.keys = torch.nn.ParameterList([torch.nn.Parameter(k.detach().float().clone()) for k in keys])
        self.values = torch.nn.ParameterList([torch.nn.Parameter(v.detach().float().clone()) for v in values])

    @property
    def n_tokens(self) -> int:
        return self.keys[0].shape[-2]

    @property
    def config(self):
        return self.base.config

    @property
    def device(self):
        return self.base.device

    def get_base_model(self):
        return self.base

    def _cache(self, batch: int) -> DynamicCache:
        cache = DynamicCache(config=self.base.config)
        dtype = self.base.get_input_embeddings().weight.dtype
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(k.to(dtype).expand(batch, -1, -1, -1), v.to(dtype).expand(batch, -1, -1, -1), layer)
        return cache

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict:
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=input_ids.device)
        prefix_mask = torch.ones(batch, self.n_tokens, dtype=attention_mask.dtype, device=attention_mask.device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.cat([prefix_mask, attention_mask], dim=1),
            "past_key_values": self._cache(batch),
            "use_cache": True,
        }

    def decoder_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states of the prompt tokens (used by the blockwise training loss)."""
        return self.base.get_decoder()(**self._inputs(input_ids, attention_mask)).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.base(**self._inputs(input_ids, attention_mask), **kwargs)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.base.generate(**self._inputs(input_ids, attention_mask), **kwargs)


@torch.no_grad()
def _corpus_kv(base: torch.nn.Module, tokenizer, text: str, n_tokens: int):
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True)["input_ids"][:, :n_tokens].to(base.device)
    if ids.shape[1] < n_tokens:  # a corpus shorter than the prefix: repeat it
        ids = ids.repeat(1, -(-n_tokens // ids.shape[1]))[:, :n_tokens]
    cache = base(input_ids=ids, use_cache=True).past_key_values
    return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]


class PrefixMethod:
    name = "prefix"
    config_class = PrefixMethodConfig
    default_lr = 1e-2  # a KV cache learns slowly through attention (Cartridges trains it at 2e-2)

    def attach(self, model, config: PrefixMethodConfig, tokenizer=None, corpus_text: str = ""):
        if config.init == "corpus" and corpus_text and tokenizer is not None:
            keys, values = _corpus_kv(model, tokenizer, corpus_text, config.n_tokens)
        else:
            text_config = model.config.get_text_config()
            n_kv = text_config.num_key_value_heads
            head_dim = (
                getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
            )
            shape = (1, n_kv, config.n_tokens, head_dim)
            keys = [torch.randn(shape) * 0.02 for _ in range(text_config.num_hidden_layers)]
            values = [torch.randn(shape) * 0.02 for _ in range(text_config.num_hidden_layers)]
        return PrefixModel(model, keys, values).to(model.device)

    def save(self, model: PrefixModel, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"keys.{i}": k.detach().contiguous() for i, k in enumerate(model.keys)}
        tensors.update({f"values.{i}": v.detach().contiguous() for i, v in enumerate(model.values)})
        save_file(tensors, str(directory / WEIGHTS))
        (directory / CONFIG).write_text(json.dumps({"n_tokens": model.n_tokens, "layers": len(model.keys)}))
        return [CONFIG, WEIGHTS]

    def load(self, model, directory: Path) -> PrefixModel:
        tensors = load_file(str(directory / WEIGHTS))
        layers = json.loads((directory / CONFIG).read_text())["layers"]
        loaded = PrefixModel(
            model, [tensors[f"keys.{i}"] for i in range(layers)], [tensors[f"values.{i}"] for i in range(layers)]
        ).to(model.device)
        loaded.eval()
        return loaded
