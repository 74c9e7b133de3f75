"""LoRA: low-rank adapters on the linear layers of a frozen base (via PEFT)."""
