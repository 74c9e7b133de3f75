"""The LLM judge through the official openai client against a real OpenAI-compatible HTTP server on 127.0.0.1.

The server stands in for the judging model (an external service): it grades by reading the prompt it is sent,
so the test checks what imprint sends, what it parses back, and how it fails.
"""

import socket

import pytest
from judge_server import running_judge

from imprint.errors import ImprintError
from imprint.evaluate.judge import SYSTEM, openai_judge, parse_verdict

seen: list[dict] = []


@pytest.fixture(scope="module")
def server():
    with running_judge(seen) as url:
        yield url


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("CORRECT", 1.0), ("incorrect.", 0.0), ("Correct - same date", 1.0), ("INCORRECT, not CORRECT", 0.0), ("?", None)],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_judge_grades_over_http(server):
    seen.clear()
    judge = openai_judge(server, "grader")
    verdicts = judge.grade(
        [
            ("Who is the CFO?", ["Priya Raman", "Raman"], "It is Priya Raman, since 2019"),
            ("Who is the CFO?", ["Priya Raman"], "Orla Quennell"),
            ("How many days?", ["27"], "maybe 27"),
            ("How many days?", ["27"], "   "),
        ]
    )
    assert verdicts == [1.0, 0.0, None, 0.0]
    assert len(seen) == 3  # the empty answer is wrong without asking
    assert all(b["model"] == "grader" and b["temperature"] == 0.0 for b in seen)
    assert all(b["messages"][0] == {"role": "system", "content": SYSTEM} for b in seen)
    assert any("Accepted answers: Priya Raman | Raman" in b["messages"][-1]["content"] for b in seen)


def test_unreachable_judge_is_a_one_line_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    judge = openai_judge(f"http://127.0.0.1:{port}/v1", "grader", retries=0)
    with pytest.raises(ImprintError, match="the LLM judge failed"):
        judge.grade([("q?", ["a"], "a")])
