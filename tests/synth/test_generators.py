"""The generators against real backends: an OpenAI-compatible HTTP server on 127.0.0.1 and the tiny model in process."""

import pytest

from imprint.synth.generators import GeneratorConfig, GeneratorError, make_generator
from imprint.synth.generators.local import LocalGenerator
from imprint.synth.generators.openai import OpenAIGenerator
from imprint.synth.generators.scripted import ScriptedGenerator


def openai_gen(url, **settings):
    return OpenAIGenerator(GeneratorConfig(base_url=url, backoff_s=0.01, **settings))


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_generator_round_trip(server, api):
    url, state = server
    gen = openai_gen(url, api=api)
    assert gen.model == "tiny" and gen.name == f"openai:tiny@{url}"  # the server's only model, found via /models
    out = gen.generate(
        ["Passage: a\nRewrite:", "Passage: b\nRewrite:", "x"], max_tokens=5, temperature=0.7, stop=["\n\n"], seed=3
    )
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert len(state.requests) == 3 and {r["path"] for r in state.requests} == {
        f"/v1/{api}" if api == "completions" else "/v1/chat/completions"
    }
    sent = sorted(state.requests, key=lambda r: r["seed"])
    assert [r["seed"] for r in sent] == [3, 4, 5]  # prompt i sampled with seed + i
    assert all(r["max_tokens"] == 5 and r["stop"] == ["\n\n"] and r["model"] == "tiny" for r in sent)
    if api == "chat":
        assert sent[0]["messages"][0]["role"] == "system" and sent[0]["messages"][1]["role"] == "user"


def test_same_seed_same_text_over_http(server):
    url, _ = server
    gen = openai_gen(url)
    first = gen.generate(["Once upon a time"], max_tokens=12, temperature=1.0, seed=7)
    assert gen.generate(["Once upon a time"], max_tokens=12, temperature=1.0, seed=7) == first


def test_retries_rate_limits_and_server_errors(server):
    url, state = server
    state.fail = [429, 503, 500]
    gen = openai_gen(url, concurrency=1)
    assert len(gen.generate(["a", "b"], max_tokens=3, temperature=0)) == 2
    assert len(state.requests) == 5 and gen.retried == 3


def test_retries_a_timeout(server):
    url, state = server
    state.stall_first_s = 1.5
    gen = openai_gen(url, timeout_s=0.5, concurrency=1)
    assert len(gen.generate(["a"], max_tokens=3, temperature=0)) == 1
    assert gen.retried >= 1


def test_gives_up_after_retries_with_one_line(server):
    url, state = server
    state.fail = [503] * 10
    with pytest.raises(GeneratorError, match="failed 3 times: 503"):
        openai_gen(url, retries=2).generate(["a"], max_tokens=3, temperature=0)


def test_refusals_are_not_retried(server):
    url, state = server
    with pytest.raises(GeneratorError, match="refused: 404 .*not found"):
        openai_gen(url, model="no-such-model").generate(["a"], max_tokens=3, temperature=0)
    assert len(state.requests) == 1


def test_unreachable_server_is_a_clear_error():
    from synth_http_server import free_port

    with pytest.raises(GeneratorError, match="cannot reach the generator"):
        openai_gen(f"http://127.0.0.1:{free_port()}/v1", retries=0)


def test_concurrency_is_bounded(server):
    url, state = server
    state.hold_s = 0.3
    openai_gen(url, concurrency=2).generate([str(i) for i in range(6)], max_tokens=2, temperature=0)
    assert state.max_in_flight == 2


def test_key_comes_from_the_environment(server, monkeypatch):
    url, state = server
    monkeypatch.setenv("IMPRINT_GENERATOR_API_KEY", "sk-test-123")
    openai_gen(url).generate(["a"], max_tokens=2, temperature=0)
    assert state.requests[0]["auth"] == "Bearer sk-test-123"
    monkeypatch.delenv("IMPRINT_GENERATOR_API_KEY")
    with pytest.raises(GeneratorError, match="MY_KEY, which is not set"):
        openai_gen(url, api_key_env="MY_KEY")


def test_local_generator_batches_like_one_by_one(tiny):
    prompts = ["Passage: short\nRewrite:", "Passage: a much longer prompt than the first one\nRewrite:", "Q"]
    batched = LocalGenerator(GeneratorConfig(batch_size=3), base=tiny)
    single = LocalGenerator(GeneratorConfig(batch_size=1), base=tiny)
    greedy = batched.generate(prompts, max_tokens=8, temperature=0)
    assert greedy == single.generate(prompts, max_tokens=8, temperature=0)  # left padding changes nothing
    assert len(set(greedy)) > 1


def test_local_generator_sampling_follows_the_seed(tiny):
    gen = LocalGenerator(GeneratorConfig(batch_size=4), base=tiny)
    a = gen.generate(["x", "y"], max_tokens=10, temperature=3.0, seed=1)
    assert gen.generate(["x", "y"], max_tokens=10, temperature=3.0, seed=1) == a
    assert gen.generate(["x", "y"], max_tokens=10, temperature=3.0, seed=2) != a


def test_local_generator_stops_at_stop_strings(tiny):
    gen = LocalGenerator(GeneratorConfig(), base=tiny)
    free = gen.generate(["abc"], max_tokens=40, temperature=3.0, seed=0)[0]
    stop = next(ch for ch in free[3:] if ch.strip())  # a character the model writes after a few tokens
    cut = gen.generate(["abc"], max_tokens=40, temperature=3.0, stop=[stop], seed=0)[0]
    assert stop not in cut and free.startswith(cut) and len(cut) < len(free)


def test_local_generator_refuses_prompts_beyond_its_context(tiny):
    with pytest.raises(GeneratorError, match="exceeds"):
        LocalGenerator(GeneratorConfig(), base=tiny).generate(["x" * 5000], max_tokens=8, temperature=0)


def test_none_and_registry():
    with pytest.raises(GeneratorError, match="writes nothing"):
        make_generator("none").generate(["a"], 4, 0.0)
    from imprint.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown generator 'gpt'"):
        make_generator("gpt")


def test_scripted_generator_fails_on_cue():
    gen = ScriptedGenerator(["one\n\ntwo", "three"], fail_after=3)
    assert gen.generate(["a", "b"], 5, 0.0, stop=["\n\n"]) == ["one", "three"]
    with pytest.raises(GeneratorError):
        gen.generate(["c", "d"], 5, 0.0)
    assert len(gen.prompts) == 3
