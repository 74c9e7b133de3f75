"""Settings of `imprint export` for the whole-model formats (merged, gguf, ollama): `--set export.key=value`."""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPES = ("auto", "float32", "bfloat16", "float16")
GGUF_TYPES = ("f16", "bf16", "f32")


@dataclass(frozen=True)
class ExportConfig:
    dtype: str = field(
        default="auto",
        metadata={
            "help": "merged safetensors dtype: 'auto' (the base's own dtype for LoRA, float32 for a full fine-tune, "
            "whose trained tensors are float32), float32, bfloat16 or float16"
        },
    )
    gguf_type: str = field(
        default="f16", metadata={"help": "GGUF tensor type: f16 (llama.cpp's default), bf16 or f32 (exact)"}
    )
    llama_cpp: str = field(
        default="auto",
        metadata={
            "help": "GGUF writer: 'auto' (llama.cpp's convert_hf_to_gguf.py when it is on PATH, else imprint's own), "
            "'off' (imprint's own), or the path of a llama.cpp checkout or of its convert_hf_to_gguf.py"
        },
    )
    verify: bool = field(
        default=True,
        metadata={
            "help": "load the GGUF back through transformers and compare its logits with the merged model's "
            "(costs a second copy of the model in memory)"
        },
    )

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.gguf_type not in GGUF_TYPES:
            raise ValueError(f"gguf_type must be one of {', '.join(GGUF_TYPES)}, got {self.gguf_type!r}")
