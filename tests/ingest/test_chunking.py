"""Chunking: sentence boundaries, the token limit, headings kept with their text, and no text lost."""

import random

import pytest

from imprint.ingest.chunking import chunk_text, sentence_spans, split_sentences


def words(text):
    return len(text.split())


def assert_covers(text, chunks):
    """Joined chunks hold every word of the text, once, in order."""
    assert " ".join(c for c, _ in chunks).split() == text.split()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("Bring fruit, e.g. apples. Then go.", ["Bring fruit, e.g. apples.", "Then go."]),
        ("Use i.e. This one. Fine.", ["Use i.e. This one.", "Fine."]),
        ("Rates rose 3.5 percent. Costs fell.", ["Rates rose 3.5 percent.", "Costs fell."]),
        ("J. R. R. Tolkien wrote it. It sold.", ["J. R. R. Tolkien wrote it.", "It sold."]),
        ("Is it? Yes! Surely... Maybe.", ["Is it?", "Yes!", "Surely...", "Maybe."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("See Fig. 3 for details. Done.", ["See Fig. 3 for details.", "Done."]),
        ("Lowercase after period. and more. End", ["Lowercase after period. and more.", "End"]),
        ("No final stop", ["No final stop"]),
        ("   ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_sentence_spans_cover_all_non_space_text():
    text = "  One. Two!\nThree?  Four  "
    spans = sentence_spans(text)
    assert "".join(text[a:b] for a, b in spans).replace(" ", "").replace("\n", "") == "One.Two!Three?Four"


def test_sentences_pack_up_to_the_limit():
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
    chunks = chunk_text(text, words, max_tokens=6)
    assert [c for c, _ in chunks] == ["One two three. Four five six.", "Seven eight nine. Ten eleven twelve."]
    assert [n for _, n in chunks] == [6, 6]


def test_chunks_are_exact_slices_and_keep_paragraph_breaks():
    text = "First para one. First para two.\n\nSecond para."
    chunks = chunk_text(text, words, max_tokens=100)
    assert chunks == [(text, 8)]


def test_heading_sticks_to_the_text_after_it():
    text = "# Title\n\nIntro sentence is here. Another intro sentence.\n\n## Section\n\nBody text of the section."
    chunks = [c for c, _ in chunk_text(text, words, max_tokens=7)]
    assert chunks[0].startswith("# Title\n\nIntro sentence")
    assert any(c.startswith("## Section\n\nBody text") for c in chunks)
    assert not any(c.rstrip().splitlines()[-1].startswith("#") for c in chunks)
    assert_covers(text, [(c, 0) for c in chunks])


def test_stacked_headings_and_a_trailing_heading():
    text = "# Book\n## Chapter\nFirst line of text.\n\n## Empty end"
    chunks = [c for c, _ in chunk_text(text, words, max_tokens=8)]
    assert chunks[0] == "# Book\n## Chapter\nFirst line of text."
    assert chunks[-1] == "## Empty end"


def test_a_sentence_longer_than_the_limit_is_split_on_words():
    text = "Short one. " + " ".join(f"W{i}" for i in range(25)) + ". Tail."
    chunks = chunk_text(text, words, max_tokens=10)
    assert all(n <= 10 for _, n in chunks)
    assert chunks[0] == ("Short one.", 2)
    assert_covers(text, chunks)


def test_a_long_heading_section_keeps_the_heading_with_the_first_words():
    text = "## Heading\n" + " ".join(f"w{i}" for i in range(30))
    chunks = chunk_text(text, words, max_tokens=8)
    assert chunks[0][0].startswith("## Heading\nw0")
    assert all(n <= 8 for _, n in chunks)
    assert_covers(text, chunks)


def test_long_lines_without_stops_split_on_lines_first():
    text = "\n".join(f"- item number {i}" for i in range(10))
    chunks = chunk_text(text, words, max_tokens=8)
    assert all(c.startswith("- item") for c, _ in chunks)
    assert all(n <= 8 for _, n in chunks)
    assert_covers(text, chunks)


def test_counts_are_taken_on_the_real_slice():
    """With a character counter (not additive over words), every chunk still respects the limit."""
    text = "Alpha beta gamma. Delta epsilon. " * 20 + "Supercalifragilisticexpialidocious" * 3
    chunks = chunk_text(text, len, max_tokens=40)
    assert all(len(c) == n <= 40 for c, n in chunks)
    assert "".join(c for c, _ in chunks).replace(" ", "") == text.replace(" ", "")


def test_random_documents_lose_and_duplicate_nothing():
    rng = random.Random(0)
    vocab = ["alpha", "Beta", "Dr.", "e.g.", "3.5", "J.", "word", "x" * 30, "end.", "Q?", "#", "## H", "-"]
    for _ in range(200):
        paragraphs = []
        for _ in range(rng.randint(1, 6)):
            sentence_words = [rng.choice(vocab) for _ in range(rng.randint(1, 40))]
            paragraphs.append(" ".join(sentence_words) + rng.choice([".", "!", "", "\n## Sub"]))
        text = "\n\n".join(paragraphs)
        max_tokens = rng.randint(1, 30)
        chunks = chunk_text(text, words, max_tokens=max_tokens)
        assert_covers(text, chunks)
        assert all(c and c == c.strip() and c in text for c, _ in chunks)
        assert all(n <= max_tokens for _, n in chunks)


def test_bad_limit():
    with pytest.raises(ValueError):
        chunk_text("text", words, max_tokens=0)
