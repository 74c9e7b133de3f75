"""Prefix tuning as a trainable KV cache: per layer, `n_tokens` keys and values that every prompt attends to.

The base model stays frozen; only the cache trains (next-token loss through the attention of every layer).
It is initialised from the base model's own keys and values over the first tokens of the corpus, which the
Cartridges paper found far better than random. The cache costs no prompt tokens at answer time, but each
answer attends to `n_tokens` more positions. Note: on sliding-window layers (Gemma-3: 5 of every 6) a prompt
longer than the window minus `n_tokens` no longer sees the prefix there.

Training may add context distillation (`prefix.distill`, see distill.py): the prefix learns to make the
model answer as the base model does with the source text in its context.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache

from imprint.methods.prefix.config import PrefixMethodConfig
from imprint.models import cache_keyword, output_cache

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

    def kv_prefix(self) -> tuple[torch.nn.Module, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """The base model and this prefix's per-layer keys and values: how the inference engine runs it (every
        row of a batch behind the prefix, on the shared base)."""
        dtype = self.base.get_input_embeddings().weight.dtype
        return self.base, ([k.detach().to(dtype) for k in self.keys], [v.detach().to(dtype) for v in self.values])

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

    def _packed_masks(self, position_ids: torch.Tensor) -> dict:
        """Attention masks for packed rows behind the prefix: each token sees the whole prefix (within the
        sliding window, counted from its own example's start) and the earlier tokens of its own example."""
        config, n = self.base.config.get_text_config(), self.n_tokens
        start = torch.diff(position_ids, prepend=position_ids[:, :1] - 1) != 1
        example = start.cumsum(-1)
        query = position_ids + n
        keys = torch.cat([torch.arange(n, device=query.device).expand(query.shape[0], n), query], 1)
        own = (example[:, :, None] == example[:, None, :]) & (position_ids[:, None, :] <= position_ids[:, :, None])
        allowed = torch.cat([own.new_ones(*own.shape[:2], n), own], -1)[:, None]
        window = getattr(config, "sliding_window", None) or keys.shape[1] + 1
        sliding = allowed & ((query[:, :, None] - keys[:, None, :]) < window)[:, None]
        implementation = config._attn_implementation
        if implementation == "sdpa":
            return {"full_attention": allowed, "sliding_attention": sliding}
        if implementation == "eager":
            dtype = self.base.get_input_embeddings().weight.dtype
            low = torch.finfo(dtype).min
            return {
                k: torch.zeros(m.shape, dtype=dtype).masked_fill(~m, low)
                for k, m in {"full_attention": allowed, "sliding_attention": sliding}.items()
            }
        raise ValueError(f"packed rows behind a prefix need sdpa or eager attention, not {implementation}")

    def _inputs(self, input_ids, attention_mask=None, position_ids=None) -> dict:
        batch, length = input_ids.shape
        if position_ids is not None and attention_mask is None:  # packed rows (imprint.train.data)
            return {
                "input_ids": input_ids,
                "attention_mask": self._packed_masks(position_ids),
                "position_ids": position_ids + self.n_tokens,
                cache_keyword(self.base): self._cache(batch),
                "use_cache": True,
            }
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=input_ids.device)
        prefix_mask = torch.ones(batch, self.n_tokens, dtype=attention_mask.dtype, device=attention_mask.device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.cat([prefix_mask, attention_mask], dim=1),
            cache_keyword(self.base): self._cache(batch),
            "use_cache": True,
        }

    def decoder_hidden(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        """Last hidden states of padded or packed rows (used by the blockwise training loss)."""
        return self.base.get_decoder()(**self._inputs(input_ids, attention_mask, position_ids)).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.base(**self._inputs(input_ids, attention_mask), **kwargs)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        return self.base.generate(**self._inputs(input_ids, attention_mask), **kwargs)


@torch.no_grad()
def _corpus_kv(base: torch.nn.Module, tokenizer, text: str, n_tokens: int):
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True)["input_ids"][:, :n_tokens].to(base.device)
    if ids.shape[1] < n_tokens:  # a corpus shorter than the prefix: repeat it
        ids = ids.repeat(1, -(-n_tokens // ids.shape[1]))[:, :n_tokens]
    out = base(input_ids=ids, use_cache=True)
    cache = output_cache(out)
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
        prefixed = PrefixModel(model, keys, values).to(model.device)
        prefixed.method_config = config
        prefixed.distill = config.distill  # read by the training loop's loss
        return prefixed

    def prepare_examples(self, model: PrefixModel, examples, tokenizer, sources, cache_dir=None, progress=None):
        """With `distill` > 0: the teacher's targets for each example whose source chunk texts are given."""
        config = model.method_config
        if not config.distill:
            return examples
        from imprint.methods.prefix.distill import with_teacher_targets

        return with_teacher_targets(
            model.base,
            tokenizer,
            examples,
            sources,
            config.distill_top_k,
            config.distill_context,
            cache_dir=cache_dir,
            progress=progress,
        )

    def save(self, model: PrefixModel, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"keys.{i}": k.detach().contiguous() for i, k in enumerate(model.keys)}
        tensors.update({f"values.{i}": v.detach().contiguous() for i, v in enumerate(model.values)})
        save_file(tensors, str(directory / WEIGHTS))
        config = dataclasses.asdict(getattr(model, "method_config", PrefixMethodConfig(n_tokens=model.n_tokens)))
        (directory / CONFIG).write_text(
            json.dumps({"n_tokens": model.n_tokens, "layers": len(model.keys), "config": config}, indent=2)
        )
        return [CONFIG, WEIGHTS]

    def serving_bytes(self, directory: Path, base) -> int:
        from imprint.inference.modules import file_bytes

        return file_bytes(directory)

    def join(self, host, key: str, directory: Path):
        """Into a served batch: its keys and values, in the base's dtype, in front of each of its rows."""
        from imprint.inference.modules import Joined, tensor_bytes

        tensors = load_file(str(directory / WEIGHTS))
        layers = json.loads((directory / CONFIG).read_text())["layers"]
        model = host.base.model
        device, dtype = next(model.parameters()).device, model.get_input_embeddings().weight.dtype
        keys = [tensors[f"keys.{i}"].to(device, dtype) for i in range(layers)]
        values = [tensors[f"values.{i}"].to(device, dtype) for i in range(layers)]
        return Joined(key, self.name, tensor_bytes(keys + values), prefix=(keys, values))

    def load(self, model, directory: Path, trainable: bool = False) -> PrefixModel:
        tensors = load_file(str(directory / WEIGHTS))
        saved = json.loads((directory / CONFIG).read_text())
        layers = saved["layers"]
        loaded = PrefixModel(
            model, [tensors[f"keys.{i}"] for i in range(layers)], [tensors[f"values.{i}"] for i in range(layers)]
        ).to(model.device)
        loaded.method_config = PrefixMethodConfig(**saved.get("config", {"n_tokens": saved["n_tokens"]}))
        if not trainable:  # the cache's parameters stay trainable, the base frozen (PrefixModel)
            loaded.eval()
        return loaded
