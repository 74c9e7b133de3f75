"""imprint's own GGUF writer (through the `gguf` package), for the architectures whose layout it knows: Llama,
Qwen2, Qwen3 and Gemma 3 (text). It writes what llama.cpp's `convert_hf_to_gguf.py` writes for them: the
hyper-parameters under `<arch>.*`, tensors renamed by `gguf`'s own name map, Llama's q/k rows permuted into
llama.cpp's rotary layout, Gemma's RMSNorm weights stored as 1 + w, the output head left out when it is the
embedding matrix, 1-D tensors in f32. Anything else is refused with the reason (`GGUFUnsupported`); whether a
written file really is the model is checked afterwards by loading it back (`imprint.export.gguf.verify`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from imprint.export.gguf_vocab import VocabUnsupported, tokenizer_fields


class GGUFUnsupported(Exception):
    """imprint cannot write this model as GGUF itself (the message says why)."""


def _rope(config, layer_type: str = "full_attention") -> dict:
    params = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", 10000.0)}
    return params[layer_type] if layer_type in params else params  # Gemma 3: one set per layer type


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _common(w: gguf.GGUFWriter, c) -> None:
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(float(_rope(c)["rope_theta"]))


def _llama(w, c) -> None:
    _common(w, c)
    w.add_rope_dimension_count(_head_dim(c))
    w.add_vocab_size(c.vocab_size)


def _with_head_dim(w, c) -> None:
    _common(w, c)
    w.add_key_length(_head_dim(c))
    w.add_value_length(_head_dim(c))


def _gemma3(w, c) -> None:
    _with_head_dim(w, c)
    w.add_sliding_window(c.sliding_window)


def _gemma3_pattern(c) -> str | None:
    """Readers of Gemma 3 GGUFs assume every 6th layer is global, with the standard local rotary base."""
    standard = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(c.num_hidden_layers)]
    if list(getattr(c, "layer_types", standard)) != standard:
        return "its sliding/global layer pattern is not Gemma 3's standard one (every 6th layer global)"
    if float(_rope(c, "sliding_attention").get("rope_theta", 10000.0)) != 10000.0:
        return "its local rotary base is not Gemma 3's standard 10000"
    return None


@dataclass(frozen=True)
class Arch:
    name: str  # the GGUF architecture
    hparams: Callable
    permute_qk: bool = False  # llama.cpp's rotary layout for Llama's q/k rows
    norm_plus_one: bool = False  # Gemma's RMSNorm computes x * (1 + w); llama.cpp stores 1 + w
    check: Callable = lambda config: None  # a reason the readers would get this config wrong, or None


ARCHS = {  # transformers' model_type -> how to write it
    "llama": Arch("llama", _llama, permute_qk=True),
    "qwen2": Arch("qwen2", _common),
    "qwen3": Arch("qwen3", _with_head_dim),
    "gemma3_text": Arch("gemma3", _gemma3, norm_plus_one=True, check=_gemma3_pattern),
}
GGML = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16}  # fmt: skip
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16}  # fmt: skip


def unsupported(config) -> str | None:
    """Why imprint's writer cannot write this model (None: it can)."""
    arch = ARCHS.get(config.model_type)
    if arch is None:
        return f"imprint's GGUF writer knows {', '.join(sorted(ARCHS))}, not {config.model_type}"
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type != "default":
        return f"it uses {rope_type} rotary scaling, which imprint's GGUF writer does not write"
    if getattr(config, "attention_bias", False) and arch.name == "llama" or getattr(config, "mlp_bias", False):
        return "its attention or MLP layers have biases, which a llama GGUF does not carry"
    return arch.check(config)


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Llama's q/k rows from transformers' rotary layout (halves) into llama.cpp's (interleaved pairs)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(model: torch.nn.Module, arch: Arch, gguf_type: str):
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name.upper()], config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        stem, suffix = hf_name.rsplit(".", 1)
        if tied and stem == "lm_head":
            continue  # the readers tie the head to the embedding when the file has no output tensor
        name = names.get_name(stem)
        if name is None:
            raise GGUFUnsupported(f"imprint's GGUF writer has no GGUF name for the tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if arch.norm_plus_one and hf_name.endswith("norm.weight"):
            data = data + 1
        if arch.permute_qk and name.endswith(".attn_q"):
            data = _permute(data, config.num_attention_heads)
        elif arch.permute_qk and name.endswith(".attn_k"):
            data = _permute(data, config.num_key_value_heads)
        if data.ndim == 1 or gguf_type == "f32":
            yield f"{name}.{suffix}", data.astype(np.float32), None
        elif gguf_type == "f16":
            yield f"{name}.{suffix}", data.astype(np.float16), None
        else:
            yield f"{name}.{suffix}", gguf.quants.quantize(data, GGML["bf16"]), GGML["bf16"]


def write_gguf(model: torch.nn.Module, tokenizer, path: Path, gguf_type: str, base_model: str, title: str) -> None:
    """Write `model` (a plain transformers causal LM) and its tokenizer as one GGUF file at `path`."""
    reason = unsupported(model.config)
    if reason:
        raise GGUFUnsupported(reason)
    arch = ARCHS[model.config.model_type]
    try:
        vocab = tokenizer_fields(tokenizer, base_model, model.config.vocab_size)
    except VocabUnsupported as exc:
        raise GGUFUnsupported(f"its tokenizer cannot be written by imprint: {exc}") from None
    writer = gguf.GGUFWriter(str(path), arch.name)
    try:
        writer.add_name(title)
        writer.add_file_type(FILE_TYPES[gguf_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        arch.hparams(writer, model.config)
        for key, (value, kind, sub) in vocab.items():
            writer.add_key_value(key, value, kind, sub_type=sub)
        for name, data, raw in _tensors(model, arch, gguf_type):
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
