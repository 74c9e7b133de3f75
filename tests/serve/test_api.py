"""The server as clients use it: the official `openai` client against real uvicorn on 127.0.0.1, streaming and not,
on the base model and on LoRA, prefix and full modules; answers equal what each module's own model generates, and
each module answers its own facts (tests/serve/team_facts.py), so a response from the wrong weights fails."""

import concurrent.futures
import json
import re

import httpx
import openai
import pytest
import torch
from team_facts import CFO, FACTS, LEAVE, OPENED, answer

from imprint.answer import cut_answer
from imprint.methods.loading import load_module
from imprint.models import load_base, wants_autocast
from imprint.prompts import qa_prompt
from imprint.serve.prompting import completion_prompt
from imprint.system import System
from imprint.workspace import Workspace

QUESTION = CFO


def reference(ws_dir, model_name: str, prompt: str, max_tokens: int) -> str:
    """Greedy text of the module's (or base's) own model through Hugging Face `generate`."""
    if model_name == "tiny":
        base = load_base("tiny")
        model, tokenizer = base.model, base.tokenizer
    else:
        model, tokenizer, _ = load_module(Workspace.open(ws_dir), model_name)
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=wants_autocast(model)):
        out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_models_lists_base_and_every_module_version(client):
    cards = {m.id: m for m in client.models.list().data}
    assert {"tiny", "alpha", "alpha@1", "alpha@2", "beta", "beta@1", "cart@1", "whole@1"} <= set(cards)
    assert cards["cart"].method == "prefix" and cards["whole"].method == "full" and cards["alpha@1"].method == "lora"
    assert cards["mem@1"].method == "memory"
    assert client.models.retrieve("alpha@2").id == "alpha@2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ghost")


@pytest.mark.parametrize("model", ["tiny", "alpha", "alpha@1", "cart", "whole", "mem"])
def test_completion_equals_the_models_own_generate(client, ws_dir, model):
    prompt = qa_prompt(QUESTION)
    out = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
    assert out.choices[0].text == reference(ws_dir, model, prompt, 12)
    if model != "tiny":  # the module's own fact: the text came from its weights
        assert out.choices[0].text == f" {answer(model)}"
    assert out.model == (
        "tiny" if model == "tiny" else model if "@" in model else f"{model}@{2 if model == 'alpha' else 1}"
    )
    assert out.usage.completion_tokens <= 12 and out.usage.prompt_tokens == len(prompt) + 1  # bytes + BOS


def test_base_and_every_module_and_version_write_different_text(client):
    """Each model answers the same three questions with its own facts, the base with none of them: a server that
    answered any module name with the base, or with another module or version, fails here."""
    models = ["tiny", *FACTS]
    texts = {
        m: tuple(client.completions.create(model=m, prompt=qa_prompt(q), max_tokens=16, temperature=0).choices[0].text
                 for q in (CFO, LEAVE, OPENED))
        for m in models
    }  # fmt: skip
    for key, facts in FACTS.items():
        assert texts[key] == tuple(f" {fact}" for fact in facts), key
    assert len({t[0] for t in texts.values()}) == len(models)  # pairwise different answers to one question
    assert not any(fact in text for facts in FACTS.values() for fact in facts for text in texts["tiny"])


def test_a_bare_module_name_serves_its_current_version_and_follows_a_rollback(client, ws_dir):
    prompt = qa_prompt(QUESTION)
    ws = Workspace.open(ws_dir)
    try:
        ws.set_current_module("alpha", 1)  # what `imprint rollback alpha@1` does, while the server runs
        out = client.completions.create(model="alpha", prompt=prompt, max_tokens=16, temperature=0)
        assert out.model == "alpha@1" and out.choices[0].text == reference(ws_dir, "alpha@1", prompt, 16)
        assert out.choices[0].text == f" {FACTS['alpha@1'][0]}"  # version 1's answer, not version 2's
        cards = [m.id for m in client.models.list().data]
        assert cards.count("alpha") == 1 and "alpha@2" in cards
    finally:
        ws.set_current_module("alpha", 2)
    back = client.completions.create(model="alpha", prompt=prompt, max_tokens=16, temperature=0)
    assert back.model == "alpha@2" and back.choices[0].text == f" {FACTS['alpha@2'][0]}"


@pytest.mark.parametrize("model", ["tiny", "beta", "cart", "whole"])
def test_chat_stream_equals_non_stream(client, model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is the office?"}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_on_a_module_answers_as_imprint_ask_does(client, ws_dir):
    """One user message to a module: the trained question format, and the answer `imprint ask` gives."""
    for model in ("alpha@1", "beta", "cart"):
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                              max_tokens=24, temperature=0)  # fmt: skip
        ask = System.open(Workspace.open(ws_dir), "module", model, model="tiny")([QUESTION])[0]
        assert cut_answer(chat.choices[0].message.content) == ask.guess and "\n" not in chat.choices[0].message.content
        assert ask.guess == answer(model)  # the module's own fact: the answer came from its weights
        assert chat.usage.prompt_tokens == len(qa_prompt(QUESTION)) + 1  # the byte tokenizer: bytes + BOS


def test_sampling_choices_seeds_and_stops(client):
    kwargs = dict(model="beta", prompt="The Lisbon office", max_tokens=12, temperature=1.5, n=3, seed=7)
    first, again = client.completions.create(**kwargs), client.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) == 3  # each choice its own seed (seed + index)
    most = client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0, n=8)  # max_n: allowed
    assert len(most.choices) == 8
    batch = client.completions.create(model="tiny", prompt=["a", "b"], max_tokens=4, temperature=0, n=2)
    assert len(batch.choices) == 4 and batch.choices[0].text == batch.choices[1].text
    text = client.completions.create(model="tiny", prompt="Hello", max_tokens=16, temperature=0).choices[0].text
    cut = client.completions.create(model="tiny", prompt="Hello", max_tokens=16, temperature=0, stop=[text[3:6]])
    assert cut.choices[0].text == text[: text.index(text[3:6])] and cut.choices[0].finish_reason == "stop"


def test_concurrent_requests_for_different_modules_share_forward_passes(client, server, ws_dir):
    """Twelve requests over base, two LoRA modules and a prefix module, sent at once: they are decoded together
    (the stats show batches mixing modules) and each still gets its own model's answer, its own facts."""
    questions = [CFO, LEAVE, OPENED]
    jobs = [(m, qa_prompt(questions[i // 4])) for i, m in enumerate(["tiny", "alpha", "beta", "cart"] * 3)]
    before = httpx.get(f"{server.root}/v1/imprint/stats").json()["scheduler"]

    def call(job):
        model, prompt = job
        return client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        texts = list(pool.map(call, jobs))
    after = httpx.get(f"{server.root}/v1/imprint/stats").json()["scheduler"]
    assert after["mixed_steps"] > before["mixed_steps"] and after["max_modules"] >= 3
    assert after["prefills"] - before["prefills"] < len(jobs)  # requests joined in groups
    for i, ((model, prompt), text) in enumerate(zip(jobs, texts, strict=True)):
        assert text == reference(ws_dir, model, prompt, 16)
        if model != "tiny":
            key = "alpha@2" if model == "alpha" else f"{model}@1"
            assert text == f" {FACTS[key][i // 4]}"


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "payload, status, param",
    [
        ({"model": "tiny", "messages": []}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, 400, "temperature"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 65}, 400, "max_tokens"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 9}, 400, "n"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "logit_bias": {}}, 400, "logit_bias"),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ({"model": "ghost", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"model": "alpha@9", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"model": "alpha@latest", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}], "max_tokens": 64}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "a\ud800"}]}, 400, "messages.0.content"),
    ],
)
def test_bad_requests_get_openai_error_bodies(server, payload, status, param):
    body = json.dumps(payload)  # ASCII-escaped, so a lone surrogate travels as "\ud800" as a client may send it
    response = httpx.post(f"{server.url}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert _error(response)["param"] == param


def test_the_context_limit_counts_prompt_and_completion_to_the_token(server, client):
    """A prompt of L tokens may ask for exactly (context - L) more, and not one more."""
    tokenizer = load_base("tiny").tokenizer
    refused = httpx.post(f"{server.url}/completions", json={"model": "tiny", "prompt": "x" * 5000, "max_tokens": 64})
    assert _error(refused)["code"] == "context_length_exceeded"
    context = int(re.search(r"maximum context length is (\d+) tokens", _error(refused)["message"]).group(1))
    length = {len(completion_prompt(tokenizer, "x" * k).ids): "x" * k for k in range(context, 0, -1)}
    fits = client.completions.create(model="tiny", prompt=length[context - 64], max_tokens=64, temperature=0)
    assert fits.usage.prompt_tokens + 64 == context
    over = httpx.post(f"{server.url}/completions", json={"model": "tiny", "prompt": length[context - 63],
                                                         "max_tokens": 64})  # fmt: skip
    assert over.status_code == 400 and _error(over)["code"] == "context_length_exceeded"


def test_malformed_bodies_routes_and_sizes(server, client):
    broken = httpx.post(f"{server.url}/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and _error(broken)["type"] == "invalid_request_error"
    huge = httpx.post(f"{server.url}/completions", json={"model": "tiny", "prompt": "x" * 30_000})
    assert huge.status_code == 413 and _error(huge)["code"] == "request_too_large"
    assert httpx.get(f"{server.url}/nowhere").status_code == 404
    assert _error(httpx.get(f"{server.url}/completions"))["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="x", max_tokens=1000)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])


def test_peft_backend_answers_like_the_segmented_one(ws_dir, client):
    """`serve.lora_backend=peft` (PEFT's mixed-adapter batches): same answers for base, LoRA and prefix rows."""
    from imprint.serve import BackgroundServer, ServeConfig, create_app

    config = ServeConfig(lora_backend="peft", batch_window_ms=50, max_tokens=16, default_max_tokens=8)
    jobs = [(m, qa_prompt(CFO)) for m in ("tiny", "alpha", "beta", "cart", "alpha@1")]
    with BackgroundServer(create_app(ws_dir, model="tiny", config=config)) as other:
        peft = openai.OpenAI(base_url=other.url, api_key="k", max_retries=0)
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            texts = list(pool.map(lambda j: peft.completions.create(model=j[0], prompt=j[1], max_tokens=16,
                                                                    temperature=0).choices[0].text, jobs))  # fmt: skip
    for (model, prompt), text in zip(jobs, texts, strict=True):
        assert (
            text == client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0).choices[0].text
        )
        assert model == "tiny" or text == f" {answer(model)}"
    assert len(set(texts)) == len(jobs)  # five models, five different answers
