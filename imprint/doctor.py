"""`imprint doctor`: what this machine offers and what imprint will use on it, for users' bug reports.

Training numerics depend on the machine: the CPU's vector instructions decide whether bf16 is native (AMX,
AVX512-BF16) or emulated, and torch.compile generates different code for each. The report names the versions,
the device, the CPU's relevant ISA flags, the dtype and thread count imprint picks, a measured fp32 and bf16
matmul rate, and whether compiled training code computes what eager code does here (the same check every
training run makes on its first step, run on the small random model of the real architecture). Its verdict is
remembered per machine, so `train.compile=auto` skips what failed here before.
"""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version

import torch

from imprint import __version__
from imprint.models import DEFAULT_MODEL, cache_root, preferred_dtype

ISA_FLAGS = (
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "avx2",
    "fma",
)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115 - a short read of a virtual file
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def matmul_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 3) -> float:
    """The best of `repeats` timed n x n matmuls, in GFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: thread pool, kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return round(2 * n**3 / best / 1e9, 1)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def check_compiled_training() -> dict:
    """One training micro-step of LoRA on the small random Gemma-3, compiled (layers and loss kernels) and eager,
    compared as every training run compares them: {passed, fallbacks, seconds}."""
    import warnings

    from imprint.methods.lora.config import LoraMethodConfig
    from imprint.methods.lora.method import LoraMethod
    from imprint.synth.records import SynthRecord
    from imprint.testing import tiny_lm
    from imprint.train.compute import MicroStep
    from imprint.train.config import TrainConfig
    from imprint.train.data import collate_packed, encode_record

    model, tokenizer = tiny_lm()
    torch.manual_seed(0)
    lora = LoraMethod().attach(model.to(preferred_dtype()), LoraMethodConfig(r=4, alpha=8))
    with torch.no_grad():  # non-zero B, so every adapter weight gets a gradient to compare
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    records = [
        SynthRecord.make("doctor", [], "qa", question="Who leads finance?", answer="Priya Raman"),
        SynthRecord.make("doctor", [], "text", text="Priya Raman has served as chief financial officer since 2019."),
    ]
    batch = collate_packed([[encode_record(r, tokenizer, 128) for r in records]], tokenizer.pad_token_id)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report says what fell back
        with MicroStep(lora, TrainConfig(compile="on"), steps=1) as step:
            step(batch)
            found = step.describe()
    return {
        "passed": not found["fallbacks"],
        "compute_dtype": found["dtype"],
        "backend": found["backend"],
        "fallbacks": found["fallbacks"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def report(compile_check: bool = True, progress=None) -> dict:
    """Everything `imprint doctor` prints, as a dict."""
    check = compile_check
    total = 4 if check else 3
    flags = cpu_flags()
    from imprint.train.compute import cpu_model, machine_key

    dtype = preferred_dtype()
    out: dict = {
        "imprint": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "device": f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu",
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_flags": {f: f in flags for f in ISA_FLAGS} if flags else "unknown (no /proc/cpuinfo)",
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) or torch.cuda.is_available(),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "cache": str(cache_root()),
        "embedded_model_cached": (cache_root() / "models" / DEFAULT_MODEL / "config.json").exists(),
    }
    if progress:
        progress(1, total, step="fp32 matmul")
    out["matmul_gflops_fp32"] = matmul_gflops(torch.float32)
    if progress:
        progress(2, total, step="bf16 matmul")
    out["matmul_gflops_bf16"] = matmul_gflops(torch.bfloat16, n=1024 if out["bf16_native"] else 256)  # emulated: slow
    if progress:
        progress(3, total, step="compile check" if check else "done")
    if check:
        result = check_compiled_training()
        out["compile_check"] = result | {"machine_key": machine_key(result["backend"], dtype)}
        if progress:
            progress(4, total, step="done")
    return out


def print_report(found: dict, console) -> None:
    from rich.table import Table

    table = Table("", "", title="imprint doctor", show_header=False)
    for key, value in found.items():
        if key == "isa_flags" and isinstance(value, dict):
            value = " ".join(f"{k}{'+' if v else '-'}" for k, v in value.items())
        elif key == "compile_check":
            if value["passed"]:
                value = (
                    f"passed: compiled training code agrees with eager ({value['compute_dtype']}, {value['seconds']} s)"
                )
            else:
                value = "FAILED, imprint trains those parts eagerly here: " + "; ".join(value["fallbacks"])
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    console.print("[dim]attach this output (imprint doctor --json) to bug reports[/dim]")
