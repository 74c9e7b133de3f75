"""A real OpenAI-compatible HTTP server for the generator tests: FastAPI + uvicorn on 127.0.0.1, a free port.

It answers `/v1/models`, `/v1/completions` and `/v1/chat/completions` by generating with a Hugging Face model
(the tiny random Gemma-3 in the tests), written independently of imprint's own generator code so the tests
exercise our client against a server, not against itself. Faults are injected on request: answer the first
requests with given status codes (429, 503...), stall the first request past the client's timeout, or hold
each request a moment so concurrency can be measured.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class ServerState:
    model_id: str = "tiny"
    fail: list[int] = field(default_factory=list)  # status codes for the first requests, in order
    stall_first_s: float = 0.0  # the first request sleeps this long before answering
    hold_s: float = 0.0  # every request waits this long (so overlapping requests overlap measurably)
    requests: list[dict] = field(default_factory=list)  # every request body, with its path and auth header
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _generate(model, tokenizer, prompt: str, body: dict) -> tuple[str, int, int]:
    enc = tokenizer(prompt, return_tensors="pt")
    temperature = float(body.get("temperature", 1.0))
    kwargs = {"do_sample": temperature > 0}
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=float(body.get("top_p", 1.0)), top_k=0)
        if body.get("seed") is not None:
            torch.manual_seed(int(body["seed"]))
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=int(body.get("max_tokens", 16)), pad_token_id=tokenizer.pad_token_id, **kwargs
        )
    new = out[0, enc["input_ids"].shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    for stop in body.get("stop") or []:
        text = text.split(stop, 1)[0]
    return text, enc["input_ids"].shape[1], len(new)


def create_app(model, tokenizer, state: ServerState) -> FastAPI:
    app = FastAPI()
    generate_lock = threading.Lock()  # one generate at a time on the shared model; requests still overlap

    def admit(path: str, request: Request, body: dict):
        with state.lock:
            n = len(state.requests)
            state.requests.append({"path": path, "auth": request.headers.get("authorization"), **body})
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        if n == 0 and state.stall_first_s:
            time.sleep(state.stall_first_s)
        if state.hold_s:
            time.sleep(state.hold_s)
        if n < len(state.fail):
            status = state.fail[n]
            headers = {"retry-after": "0"} if status == 429 else {}
            return JSONResponse({"error": {"message": f"injected {status}", "type": "test"}}, status, headers=headers)
        if body.get("model") != state.model_id:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, 404)
        return None

    def finish():
        with state.lock:
            state.in_flight -= 1

    @app.get("/v1/models")
    def models():
        return {
            "object": "list",
            "data": [{"id": state.model_id, "object": "model", "created": 0, "owned_by": "tests"}],
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        return await _run_in_thread(lambda: _completion(request, body))

    def _completion(request, body):
        try:
            refused = admit("/v1/completions", request, body)
            if refused:
                return refused
            with generate_lock:
                text, n_prompt, n_new = _generate(model, tokenizer, body["prompt"], body)
            return {
                "id": f"cmpl-{len(state.requests)}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": state.model_id,
                "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
            }
        finally:
            finish()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        return await _run_in_thread(lambda: _chat(request, body))

    def _chat(request, body):
        try:
            refused = admit("/v1/chat/completions", request, body)
            if refused:
                return refused
            prompt = "\n".join(m["content"] for m in body["messages"])
            with generate_lock:
                text, n_prompt, n_new = _generate(model, tokenizer, prompt, body)
            return {
                "id": f"chat-{len(state.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": state.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
            }
        finally:
            finish()

    return app


async def _run_in_thread(fn):
    import anyio

    return await anyio.to_thread.run_sync(fn)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app: FastAPI):
    """Serve `app` with uvicorn in a background thread; yields the base URL (`http://127.0.0.1:PORT/v1`)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
