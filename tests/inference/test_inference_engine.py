"""The batched decode loop: a mixed batch of base, LoRA and prefix rows gives each row what its own model gives,
segmented LoRA equals PEFT's forward, and stop strings, streaming and seeds behave as OpenAI's do."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from imprint.inference import ANSWER_STOPS, Batch, Row, Sampling, cut_answer, generate
from imprint.inference.multilora import LoraBank
from imprint.methods.prefix.method import PrefixMethod, PrefixModel
from imprint.testing import tiny_lm, tiny_tokenizer

ADAPTERS = {
    "wide": LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    "attn": LoraConfig(r=8, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    "rs": LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", use_rslora=True, init_lora_weights=False),
}
PROMPTS = ["Question: Who leads finance?\nAnswer:", "Hello", "A much longer prompt than the others, by far.", "x"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    for i, (name, config) in enumerate(ADAPTERS.items()):
        torch.manual_seed(i)
        get_peft_model(tiny_lm()[0], config).save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def prefixes():
    """Two prefix modules of different lengths (random caches: strong, distinct effects)."""
    method, out = PrefixMethod(), {}
    for n in (3, 7):
        torch.manual_seed(n)
        config = method.config_class(n_tokens=n, init="random")
        model = method.attach(tiny_lm()[0], config)
        with torch.no_grad():
            for p in [*model.keys, *model.values]:
                p.mul_(50)
        out[n] = model
    return out


def _ids(tok, text):
    return tok(text)["input_ids"]


def test_segmented_lora_equals_peft_forward(adapters):
    tok = tiny_tokenizer()
    peft = PeftModel.from_pretrained(tiny_lm()[0], str(adapters / "wide"), adapter_name="wide")
    for name in ("attn", "rs"):
        peft.load_adapter(str(adapters / name), adapter_name=name)
    peft.eval()
    model = tiny_lm()[0]
    bank = LoraBank(model)
    for name in ADAPTERS:
        bank.load(name, adapters / name)
    names = ["__base__", "attn", "attn", "rs", "wide", "wide"]
    enc = tok(PROMPTS[:2] * 3, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = peft(**enc, adapter_names=names).logits
        with bank.route(names):
            got = model(**enc).logits
        plain = model(**enc).logits  # outside route(): the bare base model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, tiny_lm()[0](**enc).logits)
    for row in range(1, 6):
        assert not torch.allclose(got[row], plain[row], atol=1e-3)
    # equal segments (the grouped path without padding rows) and a lone adapter (the per-segment path)
    for names in (["attn", "attn", "rs", "rs", "wide", "wide"], ["__base__"] * 5 + ["rs"]):
        with torch.no_grad():
            with bank.route(names):
                got = model(**enc).logits
            torch.testing.assert_close(got, peft(**enc, adapter_names=names).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="contiguous"), bank.route(["wide", "attn", "wide"]):
        pass


def _teacher_forced_logprobs(model, prompt_ids, ids):
    """Log-probabilities `model` alone gives the generated tokens, scoring the whole sequence in one forward."""
    full = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, len(prompt_ids) - 1 : -1].float().log_softmax(-1)
    return logits.gather(-1, torch.tensor(ids)[:, None])[:, 0]


def test_mixed_batch_gives_each_row_its_own_model(adapters, prefixes):
    """Base, two LoRA and two prefix rows of different lengths in ONE batch: each row's tokens and their
    log-probabilities are what its module's own model gives when it scores the sequence alone."""
    tok = tiny_tokenizer()
    shared = tiny_lm()[0]
    bank = LoraBank(shared)
    for name in ("wide", "rs"):
        bank.load(name, adapters / name)
    cache = {n: ([k.detach() for k in m.keys], [v.detach() for v in m.values]) for n, m in prefixes.items()}
    specs = [("wide", None), ("__base__", None), ("__base__", 3), ("rs", None), ("__base__", 7), ("wide", None)]
    rows = [
        Row(_ids(tok, PROMPTS[i % 4]), Sampling(max_tokens=6, temperature=0), adapter=a, prefix=p and cache[p])
        for i, (a, p) in enumerate(specs)
    ]
    generate(shared, tok, rows, router=bank)
    references = {
        "wide": PeftModel.from_pretrained(tiny_lm()[0], str(adapters / "wide")).eval(),
        "rs": PeftModel.from_pretrained(tiny_lm()[0], str(adapters / "rs")).eval(),
        3: prefixes[3],
        7: prefixes[7],
        None: tiny_lm()[0],
    }
    for row, (adapter, prefix) in zip(rows, specs, strict=True):
        assert row.finish_reason == "length" and len(row.ids) == 6
        reference = references[prefix] if prefix else references[adapter if adapter != "__base__" else None]
        expected = _teacher_forced_logprobs(reference, row.prompt_ids, row.ids)
        torch.testing.assert_close(torch.tensor(row.logprobs), expected, atol=1e-4, rtol=1e-4)
        alone = Row(row.prompt_ids, row.sampling, adapter=row.adapter, prefix=row.prefix)
        generate(shared, tok, [alone], router=bank)
        assert alone.ids == row.ids
    assert len({tuple(r.logprobs) for r in rows}) == len(rows)  # six different models, six different results


def test_rows_joining_a_running_batch_get_their_own_models_answers(adapters, prefixes):
    """Continuous batching: rows admitted between decode steps (their caches left-padded to the batch's length)
    and rows leaving early change nothing about any row's tokens or log-probabilities."""
    tok = tiny_tokenizer()
    shared = tiny_lm()[0]
    bank = LoraBank(shared)
    for name in ("wide", "rs"):
        bank.load(name, adapters / name)
    cache = ([k.detach() for k in prefixes[7].keys], [v.detach() for v in prefixes[7].values])
    first = [Row(_ids(tok, PROMPTS[0]), Sampling(max_tokens=9, temperature=0), adapter="wide"),
             Row(_ids(tok, "x"), Sampling(max_tokens=2, temperature=0))]  # fmt: skip
    later = [Row(_ids(tok, PROMPTS[2]), Sampling(max_tokens=5, temperature=0), adapter="rs"),
             Row(_ids(tok, "Hi"), Sampling(max_tokens=6, temperature=0), prefix=cache),
             Row(_ids(tok, PROMPTS[1]), Sampling(max_tokens=4, temperature=0), adapter="wide")]  # fmt: skip
    batch = Batch(shared, tok, router=bank)
    batch.admit(first)
    batch.step()
    batch.step()  # the short row has left; the long prompts joining are longer than the batch's cache
    assert len(batch) == 1 and batch.fits(later)
    batch.admit(later)
    assert [r.adapter for r in batch.rows] == sorted(r.adapter for r in batch.rows)
    batch.step()
    last = [Row(_ids(tok, "y"), Sampling(max_tokens=3, temperature=0), adapter="rs")]  # shorter than the batch
    batch.admit(last)
    while batch:
        batch.step()
    for row in first + later + last:
        alone = Row(row.prompt_ids, row.sampling, adapter=row.adapter, prefix=row.prefix)
        generate(shared, tok, [alone], router=bank)
        assert alone.ids == row.ids and len(row.ids) == row.sampling.max_tokens
        torch.testing.assert_close(torch.tensor(row.logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=1e-4)


def test_prefix_rows_match_prefix_model_generate(prefixes):
    """Against the method's own `generate` (HF generate over the same cache), token for token."""
    tok = tiny_tokenizer()
    model = prefixes[7]
    prompt = _ids(tok, PROMPTS[0])
    ref = PrefixModel.generate(model, torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0)
    row = Row(prompt, Sampling(max_tokens=8, temperature=0), prefix=([*model.keys], [*model.values]))
    generate(tiny_lm()[0], tok, [row, Row(_ids(tok, "Hi"), Sampling(max_tokens=3, temperature=0))])
    assert row.ids == ref[0, len(prompt) :].tolist()


def _push_text(tok, text, sampling, **kwargs):
    deltas = []
    row = Row([2], sampling, on_delta=deltas.append, **kwargs)
    for token in tok.encode(text, add_special_tokens=False):
        row.push(token, 0.0, tok)
        if row.finish_reason:
            break
    return row, deltas


def test_stop_strings_are_cut_and_never_streamed():
    tok = tiny_tokenizer()
    row, deltas = _push_text(tok, "Paris.\nUser: more", Sampling(max_tokens=50, stop=("\nUser:",)))
    assert row.text == "Paris." and row.finish_reason == "stop"
    assert "".join(deltas) == "Paris." and all("\n" not in d for d in deltas)
    # a partial match that turns out not to be the stop string is released
    row, deltas = _push_text(tok, "a\nUs b", Sampling(max_tokens=6, stop=("\nUser:",)))
    assert row.finish_reason == "length" and "".join(deltas) == row.text == "a\nUs b"


def test_multibyte_characters_stream_whole_and_answers_lstrip():
    tok = tiny_tokenizer()  # byte-level: 'é' and '日' arrive as several tokens
    row, deltas = _push_text(tok, " café 日本", Sampling(max_tokens=50), lstrip=True)
    assert "".join(deltas) == row.text == "café 日本"
    assert all("\ufffd" not in d for d in deltas)


@pytest.mark.parametrize("text", [' "Paris*" \nmore', " Lisbon, in 2021 Question: next", "** 27 days*", " \nfoo"])
def test_answer_rows_stream_exactly_the_answer_rule(text):
    """What an answer row streams joins to its final text, which is `cut_answer` of what was generated."""
    tok = tiny_tokenizer()
    row, deltas = _push_text(tok, text, Sampling(max_tokens=50, stop=ANSWER_STOPS), answer=True)
    assert "".join(deltas) == row.text == cut_answer(text)


def test_stop_token_and_budget():
    tok = tiny_tokenizer()
    row = Row([2], Sampling(max_tokens=3), stop_ids=frozenset({tok.eos_token_id}))
    row.push(tok.encode("a", add_special_tokens=False)[0], 0.0, tok)
    row.push(tok.eos_token_id, 0.0, tok)
    assert (row.finish_reason, row.text, len(row.ids)) == ("stop", "a", 1)
    row = Row([2], Sampling(max_tokens=2))
    for t in tok.encode("abc", add_special_tokens=False)[:2]:
        row.push(t, 0.0, tok)
    assert (row.finish_reason, row.text) == ("length", "ab")


def test_seeded_sampling_is_reproducible_and_rows_independent():
    tok, model = tiny_tokenizer(), tiny_lm()[0]

    def sample(seed, temperature=2.0, top_p=1.0):  # the tiny model is peaked: at T=2 its top token has p~0.84
        return Row(_ids(tok, "Hello"), Sampling(max_tokens=24, temperature=temperature, top_p=top_p, seed=seed))

    a, b, c, greedy, nucleus = sample(1), sample(1), sample(2), sample(None, temperature=0), sample(3, top_p=0.5)
    generate(model, tok, [a, c, greedy, nucleus])
    generate(model, tok, [b])
    assert a.ids == b.ids and a.ids != c.ids and a.ids != greedy.ids
    assert nucleus.ids == greedy.ids  # top_p 0.5 keeps only the most likely token
    penalised = Row(_ids(tok, "Hello"), Sampling(max_tokens=12, temperature=0, frequency_penalty=2.0))
    generate(model, tok, [penalised])
    assert len(set(penalised.ids)) > len(set(greedy.ids))  # the greedy tiny model repeats itself; penalties don't
