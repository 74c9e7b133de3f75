"""The memory method: product-key memories beside chosen MLPs (layer.py), trained densely or sparsely (sparse.py).

`attach` seeds the memories, hooks them onto the frozen base, and reads general text once through them: which
slots each general text reads (the TF-IDF background of sparse updates) and how large the MLP's output is (the
memory output's scale). With self-replay that text is the base model's own samples, made once per base model
and cached (about a minute on a laptop CPU for gemma-3-270m), then one forward pass over them (~7k tokens).
The module is the memories' tensors only: values, the fixed keys and query projection, the background counts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from imprint.errors import ConfigError, ImprintError
from imprint.methods.memory.config import MemoryMethodConfig
from imprint.methods.memory.layer import (
    ProductKeyMemory,
    attach_memories,
    decoder_layers,
    memories_of,
    output_module,
    resolve_layers,
)
from imprint.methods.memory.sparse import RowAdamW, select_slots

WEIGHTS = "memory.safetensors"
CONFIG = "memory_config.json"


def _base_name(model: torch.nn.Module) -> str:
    """The name `imprint.models.load_base` gave this model (so self-replay samples are shared with replay)."""
    from imprint.models import EMBEDDED, cache_root

    path = Path(getattr(model, "name_or_path", "") or "")
    if path.name in EMBEDDED and path.parent == cache_root() / "models":
        return path.name
    return str(path) if str(path) not in ("", ".") else "unnamed"


def _background_texts(model, tokenizer, config: MemoryMethodConfig) -> list[str]:
    from imprint.train.replay import corpus_replay, self_replay

    if config.background != "self":
        if not Path(config.background).exists():
            raise ImprintError(f"memory background {config.background} does not exist: give a file or folder of text")
        return [r.text for r in corpus_replay(config.background)]
    from imprint.models import BaseModel

    base = BaseModel(_base_name(model), model, tokenizer)
    return [r.text for r in self_replay(base, n_samples=config.background_texts)]


@torch.no_grad()
def measure_background(model, memories: dict[int, ProductKeyMemory], tokenizer, texts: list[str]) -> None:
    """Per memory: how many of `texts` read each slot, and the RMS of what its MLP adds to the residual stream
    over them (the memory output's scale)."""
    layers = decoder_layers(model)
    squares = {i: [] for i in memories}
    hooks = [
        output_module(layers[i]).register_forward_hook(
            lambda m, a, out, i=i: squares[i].append(out.float().pow(2).mean())
        )
        for i in memories
    ]
    was_training = model.training
    model.eval()
    try:
        for memory in memories.values():
            memory.observing = True
        for text in texts:
            for memory in memories.values():
                memory.counts.zero_()
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=512)["input_ids"]
            model(input_ids=ids.to(next(model.parameters()).device))
            for memory in memories.values():
                memory.background_df += (memory.counts > 0).to(memory.background_df.dtype)
                memory.background_n += 1
    finally:
        for hook in hooks:
            hook.remove()
        for memory in memories.values():
            memory.observing = False
            memory.counts.zero_()
        model.train(was_training)
    for i, memory in memories.items():
        if squares[i]:
            memory.scale.fill_(float(torch.stack(squares[i]).mean().sqrt()))


def _build(model, config: MemoryMethodConfig) -> dict[int, ProductKeyMemory]:
    text_config = model.config.get_text_config()
    try:
        layers = resolve_layers(config.layers, text_config.num_hidden_layers)
    except ValueError as exc:
        raise ConfigError(f"{exc} (memory.layers)") from exc
    generator = torch.Generator().manual_seed(config.seed)
    dim = text_config.hidden_size
    return {
        i: ProductKeyMemory(dim, config.n_keys, config.heads, config.knn, config.key_dim, generator) for i in layers
    }


def _freeze_base(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _make_trainable(model, config: MemoryMethodConfig) -> None:
    """Values train; the loop builds its optimizer from `model.imprint_optimizer` (row-wise AdamW)."""
    memories = list(memories_of(model).values())
    for memory in memories:
        memory.values.requires_grad_(True)
    select = (lambda m: select_slots(m, config.top_t)) if config.update == "sparse" else (lambda m: None)
    model.imprint_optimizer = lambda params, train: RowAdamW(memories, select, train.lr, train.weight_decay)
    model.imprint_compile_layers = False  # a layer's memory counts its reads: a side effect, kept out of graphs


class MemoryMethod:
    name = "memory"
    config_class = MemoryMethodConfig
    default_lr = 1e-1  # a selected row moves ~lr per step (Adam), in units of the MLP contribution it adds to

    def attach(self, model, config: MemoryMethodConfig, tokenizer=None, corpus_text: str = ""):
        _freeze_base(model)
        texts = _background_texts(model, tokenizer, config) if tokenizer is not None else []
        memories = _build(model, config)
        attach_memories(model, memories)
        if texts:
            measure_background(model, memories, tokenizer, texts)
        model.method_config = config
        _make_trainable(model, config)
        return model

    def save(self, model, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        memories = memories_of(model)
        tensors = {f"{i}.{k}": v.detach().contiguous() for i, m in memories.items() for k, v in m.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS))
        config = dataclasses.asdict(getattr(model, "method_config", MemoryMethodConfig()))
        saved = {"layers": sorted(memories), "slots": next(iter(memories.values())).n_slots, "config": config}
        (directory / CONFIG).write_text(json.dumps(saved, indent=2))
        return [CONFIG, WEIGHTS]

    def serving_bytes(self, directory: Path, base) -> int:
        """A base copy as loaded, plus the memory tensors (known before loading, to evict first)."""
        from imprint.inference.modules import tensor_bytes

        return tensor_bytes(base.model.parameters()) + sum(f.stat().st_size for f in directory.glob("*.safetensors"))

    def join(self, host, key: str, directory: Path):
        """Into serving: a base copy of its own with the memory layers hooked on (the hooks change the model they
        are on, so they cannot ride on the shared base); its rows form a batch of their own, as full fine-tunes'."""
        from imprint.inference.modules import Joined, tensor_bytes
        from imprint.models import load_base

        model = self.load(load_base(host.base.name).model, directory)
        return Joined(key, self.name, tensor_bytes([*model.parameters(), *model.buffers()]), model=model)

    def load(self, model, directory: Path, trainable: bool = False):
        saved = json.loads((directory / CONFIG).read_text())
        config = MemoryMethodConfig(**saved["config"])
        layers = ",".join(str(i) for i in saved["layers"])
        memories = _build(model, dataclasses.replace(config, layers=layers))
        tensors = load_file(str(directory / WEIGHTS))
        for i, memory in memories.items():
            own = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}
            if own.get("values") is None or own["values"].shape != memory.values.shape:
                raise ImprintError(f"module {directory} does not fit this base model (memory of layer {i})")
            memory.load_state_dict(own)
        _freeze_base(model)
        attach_memories(model, memories)
        model.method_config = config
        if trainable:
            _make_trainable(model, config)
        else:
            model.eval()
        return model
