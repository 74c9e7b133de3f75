"""SQuAD-style metrics on hand-computed cases."""

import pytest

from imprint.evaluate.metrics import exact_match, normalize, token_f1


def test_normalize_drops_case_punctuation_and_articles():
    assert normalize("The  Priya Raman!") == "priya raman"


@pytest.mark.parametrize(
    ("prediction", "answers", "em", "f1"),
    [
        ("Priya Raman", ["Priya Raman", "Raman"], 1.0, 1.0),
        ("Raman, the CFO", ["Priya Raman"], 0.0, 0.5),  # {raman, cfo} vs {priya, raman}: p = r = 1/2
        ("27 days", ["27", "27 days"], 1.0, 1.0),
        ("", ["27"], 0.0, 0.0),
        ("twenty", ["27"], 0.0, 0.0),
        ("27 days of leave", ["27 days", "27"], 0.0, 2 * (2 / 4) * 1 / (2 / 4 + 1)),  # best over answers
    ],
)
def test_exact_match_and_f1(prediction, answers, em, f1):
    assert exact_match(prediction, answers) == em
    assert token_f1(prediction, answers) == pytest.approx(f1)
