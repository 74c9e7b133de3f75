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
    assert main(["doctor", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["compile_check"]
    verdicts = json.loads((tmp_path / "cache" / "compile-check.json").read_text())
    mine = {k: v for k, v in verdicts.items() if k.startswith(check["machine_key"] + " | ")}
    assert set(mine) == {check["machine_key"] + " | layers", check["machine_key"] + " | loss"}
    # what it reports is what it remembered for `train.compile=auto`: passed only when every compiled part agreed
    # with eager, else each part that fell back is named with the reason recorded for it
    assert check["passed"] is all(v["ok"] for v in mine.values()) and check["passed"] is not bool(check["fallbacks"])
    for verdict in (v for v in mine.values() if not v["ok"]):
        assert any(verdict["reason"] in fallback for fallback in check["fallbacks"])
