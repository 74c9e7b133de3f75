"""The OpenAI-compatible HTTP API: `/v1/models`, `/v1/chat/completions` and `/v1/completions` (streaming and not)
over one base model and every module of a workspace.

`create_app(workspace, model="tiny")` builds the app (it loads the base model and starts the batcher thread); to
run it in a test, start it on a free port of 127.0.0.1 with `imprint.serve.server.BackgroundServer`:

    from imprint.serve import BackgroundServer, create_app
    with BackgroundServer(create_app(ws_dir, model="tiny")) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused")   # server.url ends in /v1
        client.completions.create(model="tiny", prompt="Hello", max_tokens=8)

`model` in a request is the base model's name (`tiny`, `gemma-3-270m`, or a local model directory's name) or a
module: `name` (its latest version) or `name@N`. The extension field `imprint` (e.g. `{"retrieval": true, "k": 4}`)
answers from retrieved passages and returns them as evidence; see README "Serving".
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imprint import __version__
from imprint.models import DEFAULT_MODEL, BaseModel, load_base
from imprint.prompts import qa_prompt
from imprint.serve import errors
from imprint.serve.config import ServeConfig
from imprint.serve.errors import APIError
from imprint.serve.limits import BodyLimit
from imprint.serve.prompting import Prompt, chat_prompt, completion_prompt, single_question
from imprint.serve.schemas import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorBody,
    ModelCard,
    ModelList,
)
from imprint.serve.service import Service, new_id, sse, usage
from imprint.serve.tenants import KeyRing, Tenant

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 500, 503)}
SSE_EVENT = {  # one server-sent event of a streamed answer (`"stream": true`)
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "a JSON chunk (chat.completion.chunk or text_completion), an "
                 "error body, or [DONE] at the end"},
        "event": {"type": "string"},
    },
}  # fmt: skip
STREAMED = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}}


bearer = HTTPBearer(auto_error=False, description="an API key from the keys file (any value on an open server)")


def _service(request: Request) -> Service:
    return request.app.state.service


def _tenant(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Tenant:
    key = f"Bearer {credentials.credentials}" if credentials else None
    return _service(request).keys.authenticate(key)


Svc = Annotated[Service, Depends(_service)]
Who = Annotated[Tenant, Depends(_tenant)]
router = APIRouter()


def _app(lifespan=None) -> FastAPI:
    app = FastAPI(
        title="imprint",
        version=__version__,
        description="OpenAI-compatible API over one base model and many trained modules.",
        lifespan=lifespan,
    )
    app.include_router(router)
    errors.install(app)
    return app


def api_spec() -> dict:
    """The OpenAPI spec of the API, without loading a model (for clients and the schemathesis fuzz test)."""
    return _app().openapi()


def create_app(
    workspace: Path | str,
    model: str = DEFAULT_MODEL,
    keys: Path | str | None = None,
    config: ServeConfig | None = None,
    base: BaseModel | None = None,
) -> FastAPI:
    """The app serving `model` (or an already loaded `base`) and the modules of `workspace`; `keys` is a tenants
    YAML file (see `imprint.serve.tenants`), None for an open server. `config.engine='vllm'` hands decoding to
    vLLM (started here, or the one at `config.vllm_url`)."""
    config = config or ServeConfig()
    ring = KeyRing.load(keys) if keys else KeyRing.open()
    engine = None
    if config.engine == "vllm":  # imprint stays the front door; vLLM decodes (see imprint.serve.vllm)
        from imprint.serve.vllm import start_vllm

        base, engine = start_vllm(Path(workspace), config, model, base)
    service = Service(Path(workspace), base or load_base(model), ring, config, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.engine.close()
        service.retrieval_thread.shutdown(wait=False)

    app = _app(lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    return app


@router.get("/health", include_in_schema=False)
async def health():
    return {"status": "ok"}


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(service: Svc, who: Who):
    return {"object": "list", "data": service.models(who)}


@router.get("/v1/models/{model_id}", response_model=ModelCard, responses=ERRORS)
async def retrieve_model(model_id: str, service: Svc, who: Who):
    for card in service.models(who):
        if card["id"] == model_id:
            return card
    raise APIError(404, f"The model '{model_id}' does not exist or you do not have access to it.", "model",
                   "model_not_found")  # fmt: skip


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses={**ERRORS, **STREAMED})
async def chat_completions(body: ChatRequest, service: Svc, who: Who):
    module = service.resolve(body.model, who)
    options = service.retrieval_options(body, module)
    messages = [(m.role, m.text()) for m in body.messages]
    label = module.key if module else body.model
    meta = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": label}
    if options:
        question = single_question(messages)
        if question is None:
            raise APIError(400, "Retrieval and evidence answer one question: send exactly one user message.",
                           "messages")  # fmt: skip
        answer = await service.answer(body, question, module, who, options)
        return _answer_response(service, answer, meta, body)
    question = single_question(messages) if module is not None else None
    if question is not None:  # a question to a module: answered as `imprint ask --mode module` answers it
        rows = service.answer_rows(body, question, module, who)
        prompt = Prompt(qa_prompt(question), rows[0].prompt_ids, style="qa")
    else:
        prompt = chat_prompt(service.tokenizer, messages)
        rows = service.plan(body, [prompt], who, "messages")
    info = {"module": module.key if module else None, "mode": "module" if module else "base"}
    if body.stream:
        deltas = service.stream(rows, module, who)
        return _sse(_chat_events(deltas, rows, [prompt], meta, body, info))
    await service.run(rows, module, who)
    choices = [
        {"index": i, "message": {"role": "assistant", "content": r.text}, "finish_reason": r.finish_reason}
        for i, r in enumerate(rows)
    ]
    return {"object": "chat.completion", **meta, "choices": choices, "usage": usage([prompt], rows), "imprint": info}


@router.post("/v1/completions", response_model=Completion, responses={**ERRORS, **STREAMED})
async def completions(body: CompletionRequest, service: Svc, who: Who):
    module = service.resolve(body.model, who)
    if service.retrieval_options(body, module):
        raise APIError(400, "Retrieval and evidence answer questions: use /v1/chat/completions with one user "
                       "message.", "imprint")  # fmt: skip
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    prompts = [completion_prompt(service.tokenizer, t) for t in texts]
    rows = service.plan(body, prompts, who, "prompt")
    label = module.key if module else body.model
    meta = {"id": new_id("cmpl"), "created": int(time.time()), "model": label}
    info = {"module": module.key if module else None, "mode": "module" if module else "base"}
    if body.stream:
        deltas = service.stream(rows, module, who)
        return _sse(_completion_events(deltas, rows, prompts, meta, body))
    await service.run(rows, module, who)
    choices = [{"index": i, "text": r.text, "finish_reason": r.finish_reason} for i, r in enumerate(rows)]
    return {"object": "text_completion", **meta, "choices": choices, "usage": usage(prompts, rows), "imprint": info}


@router.get("/v1/imprint/stats", include_in_schema=False)
async def stats(service: Svc, who: Who):
    """Counters: server-wide (batching, module and index caches, per tenant) for an admin key or an open server;
    a tenant's own requests, tokens and loaded modules for any other key."""
    return JSONResponse(service.stats(who))


def _answer_response(service, answer, meta: dict, body):
    """An `imprint.answer.Answer` as a chat completion (or its stream), with its evidence under `imprint`."""
    info = {k: v for k, v in answer.record().items() if k != "answer"}  # the answer itself is the message
    completion = len(service.tokenizer.encode(answer.guess, add_special_tokens=False)) if answer.guess else 0
    used = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer.prompt_tokens + completion}  # fmt: skip
    if not body.stream:
        message = {"role": "assistant", "content": answer.answer}
        choices = [{"index": 0, "message": message, "finish_reason": "stop"}]
        return {"object": "chat.completion", **meta, "choices": choices, "usage": used, "imprint": info}

    async def events():
        def chunk(choices, **extra):
            return sse({"object": "chat.completion.chunk", **meta, "choices": choices, **extra})

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {"content": answer.answer}, "finish_reason": None}])
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], imprint=info)
        if body.stream_options and body.stream_options.include_usage:
            yield chunk([], usage=used)
        yield sse("[DONE]")

    return _sse(events())


def _sse(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chat_events(deltas, rows, prompts, meta, body, info):
    def chunk(choices, **extra):
        return sse({"object": "chat.completion.chunk", **meta, "choices": choices, **extra})

    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                 for i in range(len(rows))])  # fmt: skip
    try:
        async for index, text in deltas:
            yield chunk([{"index": index, "delta": {"content": text}, "finish_reason": None}])
    except APIError as exc:
        yield sse(exc.body())
        return
    finally:
        await deltas.aclose()  # a client that leaves mid-stream stops its rows at once
    yield chunk([{"index": i, "delta": {}, "finish_reason": r.finish_reason} for i, r in enumerate(rows)], imprint=info)
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], usage=usage(prompts, rows))
    yield sse("[DONE]")


async def _completion_events(deltas, rows, prompts, meta, body):
    def chunk(choices, **extra):
        return sse({"object": "text_completion", **meta, "choices": choices, **extra})

    try:
        async for index, text in deltas:
            yield chunk([{"index": index, "text": text, "finish_reason": None}])
    except APIError as exc:
        yield sse(exc.body())
        return
    finally:
        await deltas.aclose()
    yield chunk([{"index": i, "text": "", "finish_reason": r.finish_reason} for i, r in enumerate(rows)])
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], usage=usage(prompts, rows))
    yield sse("[DONE]")
