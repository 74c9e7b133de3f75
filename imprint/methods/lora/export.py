"""`imprint export`: a LoRA module as a standard PEFT adapter directory, for plain PEFT or for vLLM.

- `peft`: `adapter_config.json` + `adapter_model.safetensors`, loadable with `PeftModel.from_pretrained(base, DIR)`
  (and `AutoPeftModelForCausalLM` on this machine: `base_model_name_or_path` points at the base model's directory).
- `vllm`: the same files, checked against what vLLM's LoRA loader accepts (plain LoRA without DoRA, bias or
  `modules_to_save`, only the projections vLLM adapts), plus the `vllm serve` command that serves it:
  `vllm serve BASE_DIR --enable-lora --max-lora-rank R --lora-modules NAME=DIR`.

Both also write `imprint_module.json` (the module's manifest: lineage, training config, metrics). Prefix and full
modules have no PEFT/vLLM form and are refused: serve them with `imprint serve`. The output directory is written
beside its final place and renamed into it, so a failed export leaves nothing half-written, and an existing
non-empty directory is never overwritten.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path

from imprint.errors import ImprintError
from imprint.models import EMBEDDED, resolve_model_dir

FORMATS = ("peft", "vllm")
VLLM_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values `vllm serve --max-lora-rank` accepts
FILES = ("adapter_config.json", "adapter_model.safetensors")


def _base_dir(base_model: str) -> str | None:
    """Where the base model's weights are on this machine (None for the generated `tiny` test model)."""
    if base_model == "tiny":
        return None
    return str(resolve_model_dir(base_model)) if base_model in EMBEDDED else base_model


def vllm_problems(config: dict, tensor_names: list[str]) -> list[str]:
    """Why vLLM's LoRA loader would reject this adapter (empty: it loads)."""
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"it is a {config.get('peft_type')} adapter, not LoRA")
    for key, label in (("use_dora", "DoRA"), ("modules_to_save", "modules_to_save"), ("lora_bias", "LoRA bias")):
        if config.get(key):
            problems.append(f"vLLM does not support {label}")
    if config.get("bias", "none") != "none":
        problems.append(f"vLLM needs bias='none', not {config.get('bias')!r}")
    if config.get("r", 0) > VLLM_RANKS[-1]:
        problems.append(f"rank {config['r']} exceeds vLLM's largest --max-lora-rank ({VLLM_RANKS[-1]})")
    layers = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in tensor_names if ".lora_" in name}
    unsupported = sorted(layers - VLLM_TARGETS)
    if unsupported:
        problems.append(f"vLLM applies LoRA only to {', '.join(sorted(VLLM_TARGETS))}, not {', '.join(unsupported)}")
    return problems


def adapter_problems(directory: Path) -> list[str]:
    """Why vLLM would refuse the LoRA adapter in `directory` (empty: it loads)."""
    from safetensors import safe_open

    config = json.loads((Path(directory) / "adapter_config.json").read_text())
    with safe_open(str(Path(directory) / "adapter_model.safetensors"), "pt") as tensors:
        return vllm_problems(config, list(tensors.keys()))


def lora_rank(directory: Path) -> int:
    return int(json.loads((Path(directory) / "adapter_config.json").read_text())["r"])


def vllm_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds an adapter of `rank`."""
    return next(r for r in VLLM_RANKS if r >= rank)


def write_adapter(source: Path, out: Path, base_dir: str | None, manifest: dict, fmt: str, command: str | None) -> None:
    """The adapter of module directory `source` as a standard PEFT directory at `out` (staged and renamed)."""
    config = json.loads((source / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_dir
    config["inference_mode"] = True
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copyfile(source / "adapter_model.safetensors", staging / "adapter_model.safetensors")
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        manifest = {**manifest, "exported_as": fmt, "vllm_command": command}
        (staging / "imprint_module.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_module(ws, spec: str, fmt: str, out: Path | str) -> dict:
    """Export module `spec` (`name` or `name@N`) to `out`; returns what was written and how to serve it."""
    if fmt not in FORMATS:
        raise ImprintError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    entry = ws.module(spec)
    label = f"{entry.name}@{entry.version}"
    if entry.method != "lora":
        raise ImprintError(
            f"module {label} is a {entry.method} module: only LoRA modules export as PEFT/vLLM adapters "
            f"(serve {entry.method} modules with `imprint serve`)"
        )
    source = Path(entry.path)
    missing = [f for f in FILES if not (source / f).is_file()]
    if missing:
        raise ImprintError(f"module {label} is missing {missing[0]} in {source}: retrain it")
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImprintError(f"{out} already exists and is not an empty directory: choose a new --out")
    base_dir = _base_dir(entry.base_model)
    report = {"module": label, "format": fmt, "out": str(out), "base_model": entry.base_model, "base_dir": base_dir}
    if fmt == "vllm":
        problems = adapter_problems(source)
        if problems:
            raise ImprintError(f"module {label} cannot be served by vLLM: {'; '.join(problems)}")
        rank = vllm_rank(lora_rank(source))
        base, target = shlex.quote(base_dir or entry.base_model), shlex.quote(f"{entry.name}={out}")
        report["command"] = f"vllm serve {base} --enable-lora --max-lora-rank {rank} --lora-modules {target}"
    write_adapter(source, out, base_dir, entry.manifest, fmt, report.get("command"))
    report["files"] = sorted(p.name for p in out.iterdir())
    return report
