"""A stand-in for vLLM's OpenAI-compatible server (vLLM does not install on a CPU machine): FastAPI + uvicorn on
127.0.0.1, answering the parts of vLLM's API imprint's vLLM engine uses, with vLLM's request and response shapes:

- `GET /health`; `POST /v1/load_lora_adapter {lora_name, lora_path}` (runtime LoRA loading; a second load of one
  name is a 400, as in vLLM);
- `POST /v1/completions` with `prompt` as token ids, `model` the served base name or a LoRA name, `max_tokens`,
  `temperature` (0: greedy), `stop`, `stop_token_ids`, `include_stop_str_in_output`, `logprobs` with
  `return_tokens_as_token_ids`, streamed as server-sent `text_completion` chunks, one token each.

It decodes with plain PEFT on the model (no cache, a full forward per token), written independently of imprint's
engine. `force_first` makes the first token of a request whose prompt ends with given ids a chosen one (to test
the blank-first rule). Run as a script it plays `vllm serve BASE --served-model-name NAME --port P
--lora-modules name=dir ...` for the start-up test.
"""

from __future__ import annotations

import argparse
import json
import threading
from dataclasses import dataclass, field

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class FakeState:
    base_name: str
    requests: list[dict] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)
    force_first: dict[tuple[int, ...], int] = field(default_factory=dict)  # prompt suffix -> first token


def create_app(model, tokenizer, state: FakeState, adapters: dict[str, str] | None = None) -> FastAPI:
    from peft import PeftModel

    holder = {"model": model}
    lock = threading.Lock()

    def load(name: str, path: str) -> None:
        current = holder["model"]
        if isinstance(current, PeftModel):
            current.load_adapter(path, adapter_name=name)
        else:
            holder["model"] = PeftModel.from_pretrained(current, path, adapter_name=name).eval()

    for name, path in (adapters or {}).items():
        load(name, path)
    app = FastAPI()

    @app.get("/health")
    def health():
        return {}

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: Request):
        body = await request.json()
        state.loads.append(body)
        current = holder["model"]
        if isinstance(current, PeftModel) and body["lora_name"] in current.peft_config:
            return JSONResponse({"message": f"The lora adapter '{body['lora_name']}' has already been loaded."}, 400)
        with lock:
            load(body["lora_name"], body["lora_path"])
        return JSONResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    def logits(ids: list[int], name: str) -> torch.Tensor:
        current = holder["model"]
        with torch.no_grad():
            if name == state.base_name:
                if isinstance(current, PeftModel):
                    with current.disable_adapter():
                        return current(torch.tensor([ids])).logits[0, -1].float()
                return current(torch.tensor([ids])).logits[0, -1].float()
            current.set_adapter(name)
            return current(torch.tensor([ids])).logits[0, -1].float()

    def tokens(body: dict):
        ids, out, text = list(body["prompt"]), [], ""
        forced = next((t for suffix, t in state.force_first.items() if tuple(ids[-len(suffix) :]) == suffix), None)
        generator = torch.Generator().manual_seed(body.get("seed") or 0)
        for step in range(body["max_tokens"]):
            with lock:
                logprobs = logits(ids + out, body["model"]).log_softmax(-1)
            if step == 0 and forced is not None:
                token = forced
            elif body.get("temperature", 1.0) == 0:
                token = int(logprobs.argmax())
            else:
                probs = (logprobs / body["temperature"]).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            top = logprobs.topk(body.get("logprobs") or 1)
            out.append(token)
            piece = tokenizer.decode(out, skip_special_tokens=True)[len(text) :]
            text += piece
            reason = None
            if token in body.get("stop_token_ids", []) or token == tokenizer.eos_token_id and not body["ignore_eos"]:
                reason = "stop"
            elif any(s in text for s in body.get("stop", [])):
                reason = "stop"
            elif len(out) == body["max_tokens"]:
                reason = "length"
            yield {"index": 0, "text": piece, "finish_reason": reason, "logprobs": {
                "tokens": [f"token_id:{token}"], "token_logprobs": [float(logprobs[token])],
                "top_logprobs": [{f"token_id:{int(t)}": float(v) for v, t in zip(*top, strict=True)}],
                "text_offset": [0]}}  # fmt: skip
            if reason:
                return

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        state.requests.append(body)
        if body["model"] != state.base_name and body["model"] not in getattr(holder["model"], "peft_config", {}):
            return JSONResponse({"error": {"message": f"The model `{body['model']}` does not exist."}}, 404)
        if not body.get("stream") or not body.get("return_tokens_as_token_ids") or not isinstance(body["prompt"], list):
            return JSONResponse({"error": {"message": "this stand-in streams token-id prompts only"}}, 400)

        def events():
            for choice in tokens(body):
                chunk = {"id": "cmpl-fake", "object": "text_completion", "model": body["model"], "choices": [choice]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    """`vllm serve BASE ...` as imprint launches it: serves the tiny model (any BASE) with the given adapters."""
    import uvicorn

    from imprint.testing import tiny_lm

    parser = argparse.ArgumentParser()
    parser.add_argument("verb")
    parser.add_argument("base")
    parser.add_argument("--served-model-name")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--lora-modules", nargs="*", default=[])
    args, rest = parser.parse_known_args()
    model, tokenizer = tiny_lm()
    adapters = dict(item.split("=", 1) for item in args.lora_modules)
    state = FakeState(args.served_model_name)
    print(json.dumps({"argv_rest": rest, "adapters": adapters}), flush=True)
    uvicorn.run(create_app(model, tokenizer, state, adapters), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
