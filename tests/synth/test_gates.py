"""Quality gates: grounding, garbage, length, repetition, copies, duplicates and the kept/dropped summary."""

from imprint.synth.gates import GateConfig, SourceFacts, apply_gates, ungrounded
from imprint.synth.records import SynthRecord

SOURCE = (
    "People\nHamish Oyelaran-Birch has served as chief financial officer since March 2019. He approves expenses "
    "above 5,000 euros. The Bergen office opened in 2015 and employs six engineers."
)
FACTS = SourceFacts.of(SOURCE)


def text(t, **meta):
    return SynthRecord.make("paraphrase", ["c1"], "text", text=t, meta={"template": "paraphrase.plain", **meta})


def qa(q, a):
    return SynthRecord.make("qa", ["c1"], "qa", question=q, answer=a, meta={"template": "qa.factual"})


def test_grounded_restatements_pass():
    for sentence in [
        "Since March 2019 the chief financial officer has been Hamish Oyelaran-Birch.",
        "Oyelaran-Birch's approval is needed for expenses above 5000 euros.",  # possessive, number format
        "The Bergen office employs 6 engineers; it opened in 2015.",  # number word in the source, digit here
        "However, expenses above 5,000 euros need approval.",  # a capital that only opens the sentence
    ]:
        assert ungrounded(sentence, FACTS) == [], sentence


def test_hallucinated_names_numbers_and_dates_are_caught():
    assert ungrounded("Hamish Oyelaran-Birch joined in 2017.", FACTS) == ["2017"]
    assert ungrounded("He reports to Mara Lindqvist.", FACTS) == ["Mara", "Lindqvist"]
    assert ungrounded("The office opened in April 2015.", FACTS) == ["April"]
    assert ungrounded("Bergen employs twelve engineers.", FACTS) == ["twelve"]
    assert ungrounded("Hamish Smith-Birch approves expenses.", FACTS) == ["Smith-Birch"]
    assert ungrounded("Zorblat Hamish approves expenses.", FACTS) == ["Zorblat"]  # a name run opening a sentence


def test_each_reason_is_counted():
    long_text = " ".join(["Hamish Oyelaran-Birch approves expenses above 5,000 euros since March 2019."] * 2)
    records = [
        text("Since March 2019 the chief financial officer has been Hamish Oyelaran-Birch, who approves expenses."),
        text("since march 2019, the chief financial officer has been Hamish Oyelaran-Birch who approves expenses!"),
        text(
            "Since March 2019 the chief financial officer has been Hamish Oyelaran-Birch, who approves expenses. "
            "Indeed."
        ),
        text("\x00\x01\x02 garbage \ufffd\ufffd bytes \x07\x08 from a broken model \x0e\x0f"),
        text("Too short."),
        text("He approves the the the the the the the the the the the the the the the the the the."),
        text("Since 2021 the chief financial officer has been Hamish Oyelaran-Birch, who approves expenses."),
        text(SOURCE[7:123]),  # two sentences of the source, verbatim: restates nothing
        qa("Who approves expenses above 5,000 euros?", "Hamish Oyelaran-Birch"),
        qa("Who approves large expenses?", "Priya Raman"),
        qa("Who?", "Hamish"),
        text("Hamish Oyelaran-Birch also runs a medical research laboratory and bakes excellent bread daily."),
        text(long_text),
    ]
    report = apply_gates(records, lambda r: SOURCE, GateConfig(max_words=20))
    reasons = [reason for _, reason, _ in report.dropped]
    assert [r.text or r.question for r in report.kept] == [
        records[0].text,
        "Who approves expenses above 5,000 euros?",
    ]
    assert reasons == [
        "duplicate",
        "near-duplicate",
        "garbled",
        "too short",
        "repetitive",
        "ungrounded",
        "copies its source",
        "ungrounded",
        "too short",
        "off-source",
        "too long",
    ]
    summary = report.summary()
    assert summary["candidates"] == len(records) and summary["kept"] == 2
    assert summary["dropped"]["ungrounded"] == 2 and sum(summary["dropped"].values()) == 11
    assert summary["by_step"]["qa.factual"] == {"kept": 1, "ungrounded": 1, "too short": 1}
    assert [detail for _, reason, detail in report.dropped if reason == "ungrounded"] == ["2021", "Priya, Raman"]


def test_gates_can_be_relaxed():
    copy = text(SOURCE)
    hallucinated = text("Since 2021 the chief financial officer has been Hamish Oyelaran-Birch, who approves it.")
    report = apply_gates(
        [copy, hallucinated], lambda r: SOURCE, GateConfig(grounding=False, max_copy=1.1, min_support=0)
    )
    assert len(report.kept) == 2


def test_near_duplicates_found_among_many():
    base = "Hamish Oyelaran-Birch has served as chief financial officer since March 2019 and approves expenses"
    distinct = [text(f"{base} number {i} of the list, item {i} in a long series {i}.") for i in range(200)]
    report = apply_gates(
        distinct + [text(base + " number 7 of the list, item 7 in a long series 7 today.")],
        lambda r: SOURCE + " " + " ".join(str(i) for i in range(200)),
        GateConfig(grounding=False, max_copy=1.1, min_support=0),
    )
    assert [reason for _, reason, _ in report.dropped][-1:] == ["near-duplicate"]


def test_title_is_not_judged_as_generated_text():
    record = text("Leadership and Key People\n\nThe report should include the following:")
    title, source = "Leadership and Key People", "Leadership and Key People\n" + SOURCE
    config = GateConfig(min_support=0)
    assert [reason for _, reason, _ in apply_gates([record], lambda r: source, config).dropped] == []  # 10 words
    dropped = apply_gates([record], lambda r: source, config, title_of=lambda r: title).dropped
    assert [reason for _, reason, _ in dropped] == ["too short"]  # the 6 words the generator wrote
