"""SQuAD-style metrics on hand-computed cases."""

import pytest

from imprint.evaluate.metrics import (
    answer_contained,
    exact_match,
    mean,
    normalize,
    percentile,
    ratio_standard_error,
    standard_error,
    token_f1,
)


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


@pytest.mark.parametrize(
    ("prediction", "answers", "contained"),
    [
        ("Priya Raman has served as CFO since 2019.", ["priya raman"], 1.0),  # normalised, inside a continuation
        ("It was the year 2019", ["1999", "2019"], 1.0),  # any accepted answer
        ("Employees receive 270 days", ["27"], 0.0),  # whole words only: 27 is not inside 270
        ("Raman", ["Priya Raman"], 0.0),  # part of the answer is not the answer
        ("", ["The"], 0.0),  # an answer that normalises to nothing is never contained, not even in nothing
        ("", ["27"], 0.0),
    ],
)
def test_answer_contained_finds_a_whole_answer_inside_the_output(prediction, answers, contained):
    assert answer_contained(prediction, answers) == contained


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([10, 20, 30, 40], 50, 25.0),  # rank 1.5: halfway between 20 and 30
        ([10, 20, 30, 40], 95, 38.5),  # rank 2.85: 30 + 0.85 * 10
        ([10, 20, 30, 40], 0, 10.0),
        ([10, 20, 30, 40], 100, 40.0),
        ([40, 10, 30, 20], 50, 25.0),  # order does not matter
        ([7], 95, 7.0),
        ([], 50, None),
    ],
)
def test_percentile_interpolates_between_ranks(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected) if expected is not None else percentile(values, q) is None


def test_mean_skips_missing_values():
    assert mean([1.0, None, 0.0]) == 0.5 and mean([None]) is None and mean([]) is None


def test_standard_error_of_a_proportion_and_of_paired_differences():
    # 3 of 4 right: sample sd sqrt(0.25) over sqrt(4)
    assert standard_error([1, 1, 1, 0]) == pytest.approx(0.25)
    assert standard_error([1]) is None and standard_error([None, 1.0]) is None
    assert standard_error([0, 1]) == pytest.approx(0.5)  # two values are enough: sd sqrt(0.5) over sqrt(2)
    assert standard_error([0.5, 0.5, 0.5]) == 0.0
    # paired: a module that flips one of four items differs from the base by [0, 0, 0, -1]
    assert standard_error([0, 0, 0, -1]) == pytest.approx(0.25)


def test_ratio_standard_error_treats_each_cluster_as_one_unit():
    # two samples of 2 and 6 tokens, agreeing on 2 and 3: ratio 5/8; residuals 2-1.25 and 3-3.75
    expected = (2 / 1 * (0.75**2 + 0.75**2)) ** 0.5 / 8
    assert ratio_standard_error([2, 3], [2, 6]) == pytest.approx(expected)
    assert ratio_standard_error([1, 2], [1, 2]) == 0.0  # every cluster at the same rate: no spread
    assert ratio_standard_error([1], [3]) is None
    # three clusters (n / (n - 1) = 1.5): ratio 6/12, residuals 0.5, -1.5 and 1
    assert ratio_standard_error([1, 1, 4], [1, 5, 6]) == pytest.approx((1.5 * (0.25 + 2.25 + 1)) ** 0.5 / 12)
    with pytest.raises(ValueError):  # a numerator without its denominator is a caller's bug, not a shorter sample
        ratio_standard_error([1, 2, 3], [1, 2])
