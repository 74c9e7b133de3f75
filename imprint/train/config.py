"""Training hyper-parameters: a frozen dataclass with help text, validated, saved in the module manifest."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainConfig:
    # epochs, replay and replay_distill: chosen on squad_dev's tuning split, checked on its report split and
    # fictional_dev (bench/RESULTS.md "knowledge"): 3 epochs of prose data with 30% distilled self-replay
    epochs: float = field(default=3.0, metadata={"help": "passes over the synthetic set (fractions allowed)"})
    lr: float = field(
        default=1e-3,
        metadata={
            "help": "peak AdamW learning rate; unset, each method uses its own (full 3e-5, prefix 1e-2, memory 0.1)"
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup: float = field(default=0.05, metadata={"help": "fraction of steps with linear warm-up"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decays to lr * min_lr_ratio"})
    batch_tokens: int = field(default=2048, metadata={"help": "tokens per micro-batch (rows x row width)"})
    pack: bool = field(
        default=True,
        metadata={"help": "pack examples end to end into rows (exact: no cross-example attention)"},
    )
    pack_width: int = field(
        default=256,
        metadata={"help": "packed row width in tokens, widened to the longest example; attention costs grow with it"},
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_len: int = field(default=384, metadata={"help": "longer examples are truncated to this many tokens"})
    clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping"})
    loss_chunk: int = field(default=256, metadata={"help": "positions per block of the vocabulary projection"})
    checkpoint_every: int = field(default=20, metadata={"help": "save a resumable checkpoint every N steps (0: never)"})
    replay: float = field(
        default=0.3,
        metadata={"help": "fraction of training examples that are general text, against forgetting (0: none)"},
    )
    replay_corpus: str = field(
        default="", metadata={"help": "file or folder of general text for replay (default: the base's own samples)"}
    )
    replay_pool: int = field(
        default=64,
        metadata={
            "help": "distinct samples of the base model in the self-replay pool (sampled once per base model and "
            "cached); replay records beyond it repeat samples"
        },
    )
    replay_prior: float = field(
        default=0.0,
        metadata={
            "help": "share of the self-replay pool sampled from nothing but the start of text (the base's own prior: "
            "web pages, code, letters...) instead of continuing imprint's 40 general prompts"
        },
    )
    replay_distill: float = field(
        default=1.0,
        metadata={
            "help": "on replay records, weight of the base's own next-token distribution (its top 32, computed once "
            "before training) as the target instead of the text's next token: 1 pulls towards the base by KL, "
            "0 trains on the sampled tokens; nothing to weigh when train.replay is 0"
        },
    )
    forget_budget: float = field(
        default=0.0,
        metadata={
            "help": "nats/token: every forget_every steps the base's own samples on held-out general prompts are "
            "scored; while their NLL rose more than this over the base's (a KL estimate), the learning rate is "
            "halved, and training stops once it is a 16th (0: off)"
        },
    )
    forget_every: int = field(default=10, metadata={"help": "steps between forgetting-budget checks"})
    forget_samples: int = field(default=16, metadata={"help": "held-out base-model samples the budget scores"})
    read: float = field(
        default=0.3,
        metadata={
            "help": "share of the question-answer records also trained open book, after passages the retriever "
            "finds for them (as module+rag asks), so the module reads evidence as well as recalls (0: none; each "
            "such record costs ~train.read_k chunks of tokens)"
        },
    )
    read_k: int = field(default=2, metadata={"help": "passages per open-book record (each costs ~a chunk of tokens)"})
    autocast: bool = field(
        default=True,
        metadata={"help": "where the hardware has bf16: autocast fp32 trainables (full, LoRA/prefix on a bf16 base)"},
    )
    compile: str = field(
        default="auto",
        metadata={"help": "torch.compile the decoder layers: 'auto' (models of 50M+ parameters), 'on' or 'off'"},
    )
    compile_backend: str = field(
        default="inductor",
        metadata={"help": "torch.compile backend for compiled layers and loss kernels ('aot_eager' to debug one)"},
    )
    max_nonfinite: int = field(
        default=3,
        metadata={"help": "stop after this many steps in a row with a non-finite loss or gradient (each is skipped)"},
    )
    verify: bool = field(
        default=True,
        metadata={
            "help": "after training, answer a sample of the training questions with the module and the base; "
            "a module no better than the base fails the run"
        },
    )
    verify_n: int = field(default=32, metadata={"help": "training questions (or texts) sampled for that check"})
    seed: int = field(default=0, metadata={"help": "seed for init, shuffling and dropout"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = all cores)"})
    log: str = field(
        default="", metadata={"help": "log each step to 'tensorboard', 'wandb' or 'mlflow' (under runs/<name>/)"}
    )

    def __post_init__(self):
        if not (math.isfinite(self.epochs) and math.isfinite(self.lr)) or self.epochs <= 0 or self.lr <= 0:
            raise ValueError(f"epochs and lr must be finite and positive, got {self.epochs} and {self.lr}")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("warmup must be in [0, 1) and min_lr_ratio in [0, 1]")
        if not 0 <= self.replay < 1:
            raise ValueError(f"replay must be in [0, 1), got {self.replay}")
        if self.replay_pool < 1 or not 0 <= self.replay_prior <= 1:
            raise ValueError(
                f"replay_pool must be >= 1 and replay_prior in [0, 1], got {self.replay_pool}, {self.replay_prior}"
            )
        if not 0 <= self.replay_distill <= 1:
            raise ValueError(f"replay_distill must be in [0, 1], got {self.replay_distill}")
        if self.forget_budget < 0 or self.forget_every < 1 or self.forget_samples < 1:
            raise ValueError("forget_budget must be >= 0, forget_every and forget_samples >= 1")
        if not 0 <= self.read <= 1 or self.read_k < 1:
            raise ValueError(f"read must be in [0, 1] and read_k >= 1, got {self.read} and {self.read_k}")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"train.compile must be auto, on or off, got {self.compile!r}")
        if not self.compile_backend:
            raise ValueError("train.compile_backend must name a torch.compile backend, e.g. inductor")
        if self.max_nonfinite < 1 or self.verify_n < 1:
            raise ValueError("train.max_nonfinite and train.verify_n must be >= 1")
        if self.log not in ("", "tensorboard", "wandb", "mlflow"):
            raise ValueError(f"train.log must be tensorboard, wandb or mlflow, got {self.log!r}")
        if (
            self.batch_tokens < 16
            or self.grad_accum < 1
            or self.max_len < 8
            or self.loss_chunk < 1
            or self.pack_width < 8
        ):
            raise ValueError(
                "batch_tokens >= 16, grad_accum >= 1, max_len >= 8, pack_width >= 8 and loss_chunk >= 1 are required"
            )
