"""`imprint doctor`: versions, device, ISA flags, chosen dtype and threads, measured matmul rates, and the
compiled-vs-eager check (slow: it compiles with the real inductor backend)."""

import json

import pytest
import torch

from imprint.cli import main
from imprint.models import preferred_dtype


def test_doctor_reports_the_machine_as_json(capsys):
    assert main(["doctor", "--json", "--no-compile-check"]) == 0
    found = json.loads(capsys.readouterr().out)
    device = f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    assert found["torch"] == torch.__version__ and found["device"] == device
    assert found["dtype"] == str(preferred_dtype()).removeprefix("torch.")
    assert found["threads"] == torch.get_num_threads() and found["cpu_cores"] >= 1
    assert found["matmul_gflops_fp32"] > 0 and found["matmul_gflops_bf16"] > 0
    assert (
        isinstance(found["isa_flags"], dict)
        and "amx_bf16" in found["isa_flags"]
        and "avx512_bf16" in found["isa_flags"]
    )
    assert "compile_check" not in found


@pytest.mark.slow  # inductor compiles the small model's layers and loss kernels: minutes on 2 cores
def test_doctor_checks_compiled_training_and_remembers_the_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMPRINT_CACHE", str(tmp_path / "cache"))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "compile check" in out and ("passed" in out or "FAILED" in out)
    verdicts = json.loads((tmp_path / "cache" / "compile-check.json").read_text())
    assert any(key.endswith("| layers") for key in verdicts) and any(key.endswith("| loss") for key in verdicts)
