"""Request and response bodies of the OpenAI-compatible API, as precise pydantic models.

They are the OpenAPI spec the server publishes (and that the schemathesis fuzz test generates requests from), so
every bound a request must respect is stated here; limits that depend on the tenant (its `max_tokens`) are
checked in the handlers. Unknown fields are rejected, as OpenAI does, so a typo is a 400 rather than ignored.
The extension field `imprint` turns on retrieval and returns evidence with the answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Bounds that survive the spec's JSON numbers exactly (they are floats there): 2**63 - 1 would not.
MAX_TOKENS_BOUND = 2**31
SEED_BOUND = 2**62


def _unicode(text: str) -> str:
    """JSON may escape lone surrogates ("\\ud800"), which are not text: no tokenizer or database takes them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (it holds an unpaired surrogate code point)") from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]
ModelName = Annotated[
    Text, Field(min_length=1, max_length=256, description="the base model's name, or a module as `name` or `name@N`")
]
StopField = Annotated[
    Text | Annotated[list[Annotated[Text, Field(min_length=1, max_length=256)]], Field(max_length=4)] | None,
    Field(description="up to 4 strings; generation stops before the first one produced"),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # the spec says boolean: 0 is not false


class ImprintOptions(Strict):
    """imprint's extension: answer with retrieval over the workspace's corpus and return the evidence."""

    retrieval: bool = Field(default=False, description="retrieve passages and answer from them (rag/module+rag)")
    evidence: bool = Field(
        default=False, description="answer closed-book, then look up the passages that support the answer"
    )
    k: int = Field(default=4, ge=1, le=20, description="passages to retrieve")
    collection: Text | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the collection to search (default: the module's own, else every collection the key owns)",
    )


class StreamOptions(Strict):
    include_usage: bool = False


class Sampled(Strict):
    """Fields shared by both generation endpoints."""

    model: ModelName
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_BOUND, description="new tokens at most")
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=128, description="choices to generate")
    stop: StopField = None
    seed: int | None = Field(default=None, ge=-SEED_BOUND, le=SEED_BOUND)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    ignore_eos: bool = Field(default=False, description="keep generating past end-of-sequence (vLLM's extension; "
                             "for benchmarks)")  # fmt: skip
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(default=None, max_length=256)
    imprint: ImprintOptions | None = None


class TextPart(Strict):
    type: Literal["text"]
    text: Text


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(min_length=1)]
    name: Text | None = Field(default=None, max_length=64)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(Sampled):
    messages: list[Message] = Field(min_length=1, max_length=512)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS_BOUND, description="alias of max_tokens"
    )


class CompletionRequest(Sampled):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=64)] = Field(
        description="a prompt, or a list of prompts (one choice each, times n)"
    )


# --- responses ---


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Evidence(BaseModel):
    doc_id: str
    title: str
    chunk_id: str
    quote: str
    score: float


class ImprintInfo(BaseModel):
    """What imprint adds to a response: the module that answered and, with retrieval, the evidence."""

    module: str | None
    mode: str
    evidence: list[Evidence] = []
    confidence: float | None = None
    supported: bool | None = None
    abstained: bool | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    conflict: dict | None = None  # module+rag: the module's closed-book answer and whether the passages back it
    overridden: bool | None = None  # module+rag: the message is the top passage's quote, not what the model wrote


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    imprint: ImprintInfo | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    imprint: ImprintInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str = Field(description="the base model this one runs on")
    method: Literal["base", "lora", "prefix", "full", "memory"]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail
