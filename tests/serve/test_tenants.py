"""Tenants: a key sees and uses only its own modules, missing or wrong keys are 401, limits answer 400/429, and a
bad keys file is a one-line error."""

import hashlib
import threading

import httpx
import openai
import pytest

from imprint.errors import ConfigError
from imprint.serve import BackgroundServer, ServeConfig, create_app
from imprint.serve.tenants import KeyRing

KEYS = f"""
tenants:
  acme:
    keys: ["sk-acme"]
    collections: ["default"]
    modules: ["alpha", "c*"]
    base: true
    max_tokens: 8
  globex:
    keys: ["sha256:{hashlib.sha256(b"sk-globex").hexdigest()}"]
    collections: ["default"]
    modules: ["beta"]
    max_concurrency: 1
"""


@pytest.fixture(scope="module")
def keyed(ws_dir, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(KEYS)
    config = ServeConfig(max_tokens=256, default_max_tokens=8)
    with BackgroundServer(create_app(ws_dir, model="tiny", keys=keys, config=config)) as running:
        yield running


def _client(server, key):
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=60)


def test_requests_without_a_known_key_are_401(keyed):
    assert httpx.get(f"{keyed.url}/models").status_code == 401
    body = {"model": "alpha", "prompt": "x", "max_tokens": 2}
    response = httpx.post(f"{keyed.url}/completions", json=body, headers={"Authorization": "Bearer sk-wrong"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        _client(keyed, "sk-nobody").models.list()


def test_each_key_lists_and_uses_only_its_modules(keyed):
    acme, globex = _client(keyed, "sk-acme"), _client(keyed, "sk-globex")
    assert {m.id for m in acme.models.list().data} == {"tiny", "alpha", "alpha@1", "alpha@2", "cart", "cart@1"}
    assert {m.id for m in globex.models.list().data} == {"beta", "beta@1"}
    assert {m.owned_by for m in globex.models.list().data} == {"globex"}
    assert acme.completions.create(model="alpha@1", prompt="x", max_tokens=2).model == "alpha@1"
    assert globex.completions.create(model="beta", prompt="x", max_tokens=2).model == "beta@1"
    for client, foreign in [(acme, "beta"), (acme, "beta@1"), (acme, "whole"), (globex, "alpha"), (globex, "tiny")]:
        with pytest.raises(openai.NotFoundError) as caught:  # the same answer as for a module that does not exist
            client.chat.completions.create(model=foreign, messages=[{"role": "user", "content": "x"}], max_tokens=2)
        assert caught.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(foreign)


def test_per_key_limits(keyed):
    acme, globex = _client(keyed, "sk-acme"), _client(keyed, "sk-globex")
    with pytest.raises(openai.BadRequestError, match="at most 8"):
        acme.completions.create(model="alpha", prompt="x", max_tokens=9)
    # globex may have one request in flight: hold one open as a stream, the next one is refused with 429
    stream = globex.completions.create(model="beta", prompt="x", max_tokens=256, temperature=0, stream=True)
    first = next(iter(stream))
    assert first.choices
    with pytest.raises(openai.RateLimitError) as caught:
        globex.completions.create(model="beta", prompt="x", max_tokens=2)
    assert caught.value.body["code"] == "concurrency_limit_exceeded"
    assert acme.completions.create(model="alpha", prompt="x", max_tokens=2)  # other tenants are not affected
    stream.close()  # the client leaves: its rows stop and the slot frees
    done = threading.Event()
    for _ in range(200):
        try:
            globex.completions.create(model="beta", prompt="x", max_tokens=2)
            done.set()
            break
        except openai.RateLimitError:
            done.wait(0.05)
    assert done.is_set()


@pytest.mark.parametrize(
    "text, message",
    [
        ("tenants: {}", "non-empty `tenants:`"),
        ("tenants:\n  a: {keys: [k1], collections: [c], modules: x}", "modules must be a list"),
        ("tenants:\n  a: {keys: [k1], modules: [m]}", "name the collections it owns"),
        ("tenants:\n  a: {keys: [k1], collections: c}", "collections must be a list"),
        ("tenants:\n  a: {keys: [k1], admin: 1}", "admin must be true or false"),
        ("tenants:\n  a: {keys: [k1], colour: red}", "unknown field 'colour'"),
        ("tenants:\n  a: {keys: [k1], max_tokens: 0}", "max_tokens must be a positive integer"),
        ("tenants:\n  a: {keys: [k1]}\n  b: {keys: [k1]}", "listed twice"),
        ("tenants:\n  a: {keys: ['sha256:abc']}", "64 lowercase hex"),
        ("tenants: [", "not valid YAML"),
    ],
)
def test_bad_keys_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        KeyRing.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        KeyRing.load(tmp_path / "missing.yaml")
