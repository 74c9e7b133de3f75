"""Load: 200 requests from 16 concurrent clients over every kind of module, streaming and not, all answered."""

import concurrent.futures
import itertools

import httpx
import openai

MODELS = ["tiny", "alpha", "alpha@1", "beta", "cart", "whole"]


def _one(client, i: int) -> str:
    model = MODELS[i % len(MODELS)]
    if i % 2:
        chunks = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Question {i}?"}],
                                                max_tokens=8, stream=True)  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.completions.create(model=model, prompt=f"Request {i}:", max_tokens=8).choices[0].text


def test_200_requests_from_16_clients_all_succeed(server):
    clients = [openai.OpenAI(base_url=server.url, api_key="k", max_retries=0, timeout=120) for _ in range(16)]
    before = httpx.get(f"{server.root}/v1/imprint/stats").json()["scheduler"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(_one, client, i) for i, client in zip(range(200), itertools.cycle(clients))]
        results = [f.result() for f in futures]  # any error or non-2xx raises here
    assert len(results) == 200 and all(isinstance(r, str) for r in results)
    after = httpx.get(f"{server.root}/v1/imprint/stats").json()["scheduler"]
    assert after["errors"] == before["errors"]
    assert after["rows"] - before["rows"] == 200 and after["max_rows"] > 1
