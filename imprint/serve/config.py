"""Server settings: batching, the module memory budget and the default request limits (a frozen dataclass, like
every stage config; `imprint serve --set serve.key=value` overrides any of them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = field(default=32, metadata={"help": "most sequences decoded together in one forward pass"})
    batch_window_ms: float = field(
        default=5.0, metadata={"help": "how long the batcher waits for more requests after the first one arrives"}
    )
    max_loaded_mb: float = field(
        default=2048.0,
        metadata={
            "help": "memory budget for loaded modules (LoRA adapters, prefix caches, and full fine-tunes, which "
            "are whole model copies); least recently used modules are unloaded to stay under it"
        },
    )
    max_loaded_indexes: int = field(
        default=64,
        metadata={
            "help": "collections whose retrieval index stays open (loaded on first use, least recently used closed "
            "beyond it)"
        },
    )
    max_body_bytes: int = field(default=1_000_000, metadata={"help": "largest request body accepted (413 above)"})
    max_tokens: int = field(default=512, metadata={"help": "largest max_tokens a request may ask for"})
    default_max_tokens: int = field(default=128, metadata={"help": "max_tokens when a request gives none"})
    max_context: int = field(
        default=4096, metadata={"help": "prompt tokens + max_tokens may not exceed this (or the model's own limit)"}
    )
    max_concurrency: int = field(
        default=64, metadata={"help": "requests in flight per tenant (429 above); a keys file can set its own"}
    )
    max_queue: int = field(default=1024, metadata={"help": "requests waiting server-wide before new ones get 429"})
    max_n: int = field(default=8, metadata={"help": "most choices (`n`) per request"})
    lora_backend: str = field(
        default="segmented",
        metadata={
            "help": "how one batch applies many LoRA adapters: 'segmented' (rows sorted by adapter, in-place "
            "updates per segment; imprint.inference.multilora) or 'peft' (PEFT's mixed-adapter batches)"
        },
    )
    engine: str = field(
        default="local",
        metadata={"help": "who decodes: 'local' (imprint's own batcher) or 'vllm' (a vLLM server, LoRA modules only)"},
    )
    vllm_url: str = field(
        default="",
        metadata={
            "help": "engine=vllm: the base URL of a vLLM already running on this machine, serving the base under "
            "its imprint name with runtime LoRA loading enabled; empty: imprint starts `vllm serve` itself"
        },
    )
    vllm_port: int = field(default=0, metadata={"help": "engine=vllm: the port of the vLLM imprint starts (0: free)"})
    max_loras: int = field(default=4, metadata={"help": "engine=vllm: `--max-loras`, LoRA modules in one batch"})
    max_lora_rank: int = field(
        default=0, metadata={"help": "engine=vllm: `--max-lora-rank` (0: the smallest that fits the modules, >= 16)"}
    )
    vllm_args: str = field(
        default="", metadata={"help": "engine=vllm: more `vllm serve` arguments, e.g. '--gpu-memory-utilization 0.8'"}
    )
    vllm_start_timeout_s: float = field(
        default=900.0, metadata={"help": "engine=vllm: how long vLLM may take to load the model and start"}
    )

    def __post_init__(self):
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")
        if self.max_loaded_mb <= 0:
            raise ValueError(f"max_loaded_mb must be > 0, got {self.max_loaded_mb}")
        for name in (
            "max_loaded_indexes",
            "max_body_bytes",
            "max_tokens",
            "default_max_tokens",
            "max_context",
            "max_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens})")
        if not 1 <= self.max_n <= 128 or self.max_queue < 1:
            raise ValueError("max_n must be in [1, 128] and max_queue >= 1")
        if self.engine not in ("local", "vllm"):
            raise ValueError(f"engine must be 'local' or 'vllm', got {self.engine!r}")
        if self.max_loras < 1 or self.vllm_port < 0 or self.vllm_start_timeout_s <= 0:
            raise ValueError("max_loras must be >= 1, vllm_port >= 0 and vllm_start_timeout_s > 0")
        from imprint.methods.lora.export import VLLM_RANKS

        if self.max_lora_rank and self.max_lora_rank not in VLLM_RANKS:
            raise ValueError(f"max_lora_rank must be 0 (auto) or one of {', '.join(map(str, VLLM_RANKS))}")
        if self.lora_backend not in ("segmented", "peft"):
            raise ValueError(f"lora_backend must be 'segmented' or 'peft', got {self.lora_backend!r}")
