"""`imprint serve` as a user runs it: a real process answering the openai client, stopped with Ctrl-C; bad
settings are one-line errors before any model loads."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
from team_facts import CFO, FACTS

from imprint.cli import main
from imprint.serve import free_port


def test_imprint_serve_process_answers_and_stops_on_ctrl_c(ws_dir):
    """On the host and with the threads it was given: 127.0.0.2 (another loopback address) answers, 127.0.0.1 on the
    same port does not."""
    host = "127.0.0.2"
    port = free_port(host)
    env = {**os.environ, "IMPRINT_MODEL": "tiny"}
    command = [sys.executable, "-m", "imprint.cli", "--workspace", str(ws_dir), "serve", "--host", host, "--port",
               str(port), "--threads", "1", "--max-loaded-mb", "64", "--set", "serve.max_batch=4"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://{host}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="k", max_retries=0)
        assert "alpha@2" in {m.id for m in client.models.list().data}
        answer = client.chat.completions.create(
            model="cart", messages=[{"role": "user", "content": CFO}], max_tokens=16, temperature=0
        )
        assert answer.model == "cart@1" and answer.choices[0].message.content == FACTS["cart@1"][0]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert (
        f"on http://{host}:{port}/v1" in stderr
        and f"{host}:{port}/v1, open to any client (no --keys), 1 CPU thread\n" in stderr
    )


def test_bad_serve_settings_are_one_line_errors(ws_dir, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["--workspace", str(ws_dir), "serve", "--model", "tiny", "--port", port]) == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    cases = {
        "serve.max_batch=0": "max_batch must be >= 1",
        "serve.lora_backend=vllm": "lora_backend must be",
        "serve.colour=red": "unknown setting serve.colour",
    }
    for setting, message in cases.items():
        assert main(["--workspace", str(ws_dir), "serve", "--model", "tiny", "--set", setting]) == 1
        assert message in capsys.readouterr().err
    args = ["--workspace", str(ws_dir), "serve", "--model", "tiny", "--keys", str(tmp_path / "none.yaml")]
    assert main(args) == 1
    assert "keys file" in capsys.readouterr().err
