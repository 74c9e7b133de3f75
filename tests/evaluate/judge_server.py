"""A stand-in LLM judge: an OpenAI-compatible chat endpoint on 127.0.0.1 that grades by reading the prompt imprint
sends it (CORRECT when an accepted answer is in the system's answer), for the judge's tests and the eval's."""

import contextlib
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from imprint.evaluate.metrics import normalize


def judge_app(seen: list[dict]) -> FastAPI:
    """The judging model: every request body is appended to `seen`; "maybe" in an answer gets a reply that is no
    verdict."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        seen.append(body)
        prompt = body["messages"][-1]["content"]
        fields = dict(line.split(": ", 1) for line in prompt.splitlines() if ": " in line)
        gold = [normalize(g) for g in fields["Accepted answers"].split(" | ")]
        answer = normalize(fields["System's answer"])
        reply = "I cannot tell" if "maybe" in answer else ("CORRECT" if any(g in answer for g in gold) else "INCORRECT")
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        }

    return app


@contextlib.contextmanager
def running_judge(seen: list[dict]):
    """The judge served on a free port; yields its base URL (`http://127.0.0.1:PORT/v1`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(judge_app(seen), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(5)
