"""Log-likelihood multiple choice on the tiny model, against log-likelihoods computed by hand."""

import math

import pytest
import torch

from imprint.evaluate.choice import continuation_logprobs, score_choice_items
from imprint.evaluate.evalset import EvalItem
from imprint.prompts import qa_prompt
from imprint.testing import tiny_lm


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm()


@pytest.fixture(scope="module")
def uniform():
    """The tiny model with zero (tied) embeddings: every logit is 0, so every token has probability 1/V."""
    model, tokenizer = tiny_lm()
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()
    return model, tokenizer


def test_uniform_model_gives_minus_n_log_v(uniform):
    model, tokenizer = uniform
    v = len(tokenizer)  # 260: 256 bytes + 4 specials
    # the byte tokenizer gives one token per byte: " ab" is 3 tokens, " wxyz!" 6
    scores = continuation_logprobs(model, tokenizer, "Question: Pick\nAnswer:", [" ab", " wxyz!"])
    assert scores[0] == (pytest.approx(-3 * math.log(v), abs=1e-4), 3)
    assert scores[1] == (pytest.approx(-6 * math.log(v), abs=1e-4), 6)


def test_length_normalisation_changes_the_pick(uniform):
    model, tokenizer = uniform
    item = EvalItem("c1", "Pick", ("bbbb",), choices=("a", "bbbb"))
    row = score_choice_items(model, tokenizer, [item])[0]
    # sums: " a" = -2 log V, " bbbb" = -5 log V -> "a"; per byte: -2 log V / 1 vs -5 log V / 4 -> "bbbb"
    assert row["answer"] == "a" and row["correct"] == 0.0
    assert row["answer_norm"] == "bbbb" and row["correct_norm"] == 1.0
    assert row["logprobs"] == pytest.approx([-2 * math.log(260), -5 * math.log(260)], abs=1e-3)


def by_hand(model, tokenizer, context: str, continuation: str) -> float:
    """Unbatched: full forward of context+continuation, sum of log-softmax at each continuation token."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
    total = 0.0
    for i, token in enumerate(cont):
        total += float(logits[len(ctx) + i - 1].log_softmax(-1)[token])
    return total


def test_batched_scores_match_an_unbatched_forward(tiny):
    model, tokenizer = tiny
    context = qa_prompt("How many days of leave?")
    choices = [" 27", " twenty-seven days", " 12"]  # different lengths: right padding must not leak in
    scores = continuation_logprobs(model, tokenizer, context, choices)
    for (total, n), choice in zip(scores, choices, strict=True):
        assert n == len(choice.encode())
        assert total == pytest.approx(by_hand(model, tokenizer, context, choice), abs=1e-4)


def test_trailing_space_of_the_context_moves_to_the_continuation(tiny):
    model, tokenizer = tiny
    [(moved, n_moved)] = continuation_logprobs(model, tokenizer, "Answer: ", ["x"])
    [(plain, n_plain)] = continuation_logprobs(model, tokenizer, "Answer:", [" x"])
    assert n_moved == n_plain == 2 and moved == pytest.approx(plain)


def test_rows_pick_the_most_likely_choice(tiny):
    model, tokenizer = tiny
    item = EvalItem("m", "Largest planet?", ("Jupiter",), choices=("Mars", "Jupiter", "Venus"))
    row = score_choice_items(model, tokenizer, [item])[0]
    assert row["gold"] == 1
    assert row["answer"] == item.choices[max(range(3), key=lambda i: row["logprobs"][i])]
    assert row["correct"] == float(row["answer"] == "Jupiter")
