"""The parse-based strategy: every form it writes, each on a small text, parsed by the real spaCy pipeline."""

import warnings

import pytest

from imprint.synth.prose import ProseConfig, ProseStrategy
from imprint.synth.rules import RulesConfig, RulesStrategy
from imprint.testing import document
from imprint.workspace import Chunk


@pytest.fixture(scope="module")
def nlp():
    """The real parser. spaCy and its English pipeline are core dependencies (the default strategy, `prose`, parses
    with them): a missing one is a broken install and fails here, never a skip."""
    from imprint.synth.parsing import load

    return load()


def ask(nlp, sentence: str) -> tuple[set[tuple[str, str, str]], list[str]]:
    from imprint.synth.questions import sentence_questions

    questions, statements = sentence_questions(next(nlp(sentence).sents))
    return {(q.form, q.question, q.answer) for q in questions}, statements


def synth(texts: dict[str, str], **config):
    docs = [document(doc_id, title, text) for doc_id, (title, text) in texts.items()]
    chunks = [Chunk(f"{d.id}:v1:0", d.id, 1, 0, d.text, len(d.text.split())) for d in docs]
    return ProseStrategy(ProseConfig(**config)).synthesize(docs, chunks)


def test_object_fronted_with_do_support_and_shorter_wordings(nlp):
    qa, _ = ask(nlp, "In 2019 the company moved the workshop to London.")
    assert ("fronted", "What did the company move to London in 2019?", "the workshop") in qa
    assert ("short", "What did the company move?", "the workshop") in qa
    assert ("context", "In 2019, what did the company move to London?", "the workshop") in qa
    assert ("fronted", "Where did the company move the workshop in 2019?", "London") in qa
    assert ("fronted", "When did the company move the workshop to London?", "2019") in qa
    assert ("subject", "What moved the workshop to London in 2019?", "the company") in qa
    qa, _ = ask(nlp, "In 2019 the company moved its workshop to Dunmere Quay.")
    assert not any("its" in q.split() for _, q, _ in qa)  # alone, "its" is unresolved: the strategy resolves it first


def test_auxiliary_inversion_and_kept_preposition(nlp):
    qa, _ = ask(nlp, "Priya Raman has served as chief financial officer since March 2019.")
    assert ("fronted", "Since when has Priya Raman served as chief financial officer?", "March 2019") in qa
    assert ("subject", "Who has served as chief financial officer since March 2019?", "Priya Raman") in qa
    assert ("short", "What has Priya Raman served as?", "chief financial officer") in qa


def test_counts_amounts_and_common_nouns(nlp):
    qa, _ = ask(nlp, "Employees receive 27 days of paid annual leave per year.")
    assert any(f == "fronted" and q.startswith("How many days") and a == "27 days" for f, q, a in qa)
    qa, _ = ask(nlp, "The annual budget is $18.5 million.")
    assert ("fronted", "How much is the annual budget?", "$18.5 million") in qa
    assert not any(q == "What is $18.5 million?" for _, q, _ in qa)  # an amount identifies nothing
    qa, _ = ask(nlp, "Galactica is a band.")
    assert not any(q == "What is a band?" for _, q, _ in qa)  # nor does a bare indefinite noun


def test_causes_and_purposes_are_asked_with_why(nlp):
    qa, _ = ask(nlp, "Land plants have more chloroplasts because they receive more light.")
    assert ("cause", "Why do land plants have more chloroplasts?", "they receive more light") in qa
    qa, _ = ask(nlp, "The council built the bridge in order to connect the two districts.")
    assert ("purpose", "Why did the council build the bridge?", "to connect the two districts") in qa
    assert ("purpose", "For what purpose did the council build the bridge?", "to connect the two districts") in qa
    qa, _ = ask(nlp, "Oxygen is shipped in bulk as a liquid so that it takes less space.")
    assert any(f == "purpose" and q.startswith("Why is") and a == "so that it takes less space" for f, q, a in qa)


def test_both_directions_passive_and_active(nlp):
    qa, statements = ask(nlp, "The bridge was designed by Anna Lee in 1931.")
    assert ("active", "Who designed the bridge in 1931?", "Anna Lee") in qa
    assert ("active", "What did Anna Lee design in 1931?", "The bridge") in qa
    assert ("fronted", "By whom was the bridge designed in 1931?", "Anna Lee") in qa
    assert "Anna Lee designed the bridge in 1931." in statements
    qa, statements = ask(nlp, "The council built the bridge in 1931.")
    assert ("passive", "What was built by the council in 1931?", "the bridge") in qa
    assert ("passive", "By what was the bridge built in 1931?", "The council") in qa
    assert "The bridge was built by the council in 1931." in statements


def test_copular_reversal_and_appositive(nlp):
    qa, statements = ask(nlp, "Warsaw is the capital of Poland.")
    assert ("subject", "What is the capital of Poland?", "Warsaw") in qa
    assert "The capital of Poland is Warsaw." in statements
    qa, statements = ask(nlp, "Galactica, a Canadian indie rock band, was formed by Maple Leaf Productions in 2003.")
    assert ("appositive", "What is Galactica?", "a Canadian indie rock band") in qa
    assert "Galactica is a Canadian indie rock band." in statements
    assert ("fronted", "When was Galactica formed by Maple Leaf Productions?", "2003") in qa  # no apposition inside
    mill = "The Old Mill, a restored 18th-century granary rebuilt after the 1842 fire, was a meeting place for weavers."
    qa, statements = ask(nlp, mill)
    assert ("subject", "What was a meeting place for weavers?", "The Old Mill") in qa  # a modified attribute
    assert ("appositive", "What is the Old Mill?", "a restored 18th-century granary") in qa  # trimmed description
    assert "The Old Mill is a restored 18th-century granary." in statements


def test_no_question_keeps_an_unresolved_pronoun_or_its_answer(nlp):
    qa, _ = ask(nlp, "She approved it in 2019.")
    assert qa == set()
    qa, _ = ask(nlp, "The first railway journey took place in 1804.")
    assert not any(a == "place" for _, _, a in qa)
    assert ("fronted", "When did the first railway journey take place?", "1804") in qa


def test_pronouns_and_definite_references_resolved(nlp):
    from imprint.synth.coref import resolve_references

    sents = [
        "Galactica is a Canadian indie rock band formed in 2003.",
        "The band released its first album in 2005.",
        "Teodora Blanchard leads the firm.",
        "She joined in April 2011.",
        "Land plants have more chloroplasts because they receive more light.",
    ]
    out = resolve_references(nlp, sents)
    assert out[1] == "Galactica released Galactica's first album in 2005."
    assert out[3] == "Teodora Blanchard joined in April 2011."
    assert out[4] == "Land plants have more chloroplasts because land plants receive more light."


def test_strategy_writes_every_form_traceable_to_its_chunk(nlp):
    records = synth(
        {
            "d1": ("Galactica", "Galactica is a Canadian indie rock band. The band released its first album in 2005. "
                   "The album was produced by Maple Leaf Productions because Maple Leaf Productions owned the studio."),
            "d2": ("Labels", "Maple Leaf Productions is a record label in Halifax. It signed Galactica in 2003."),
        }
    )  # fmt: skip
    forms = {r.meta["form"] for r in records}
    assert {"raw", "resolved", "permuted", "reversed", "entity", "subject", "fronted", "active", "cause"} <= forms
    qa = [r for r in records if r.kind == "qa"]
    assert all(len(r.source_chunk_ids) == 1 and r.question.endswith("?") and r.answer for r in qa)
    assert ("When did Galactica release Galactica's first album?", "2005") in {(r.question, r.answer) for r in qa}
    entity = {r.meta["entity"]: r for r in records if r.meta["form"] == "entity"}
    across = entity["Maple Leaf Productions"]
    assert set(across.source_chunk_ids) == {"d1:v1:0", "d2:v1:0"}  # summaries gather sentences across documents
    assert "Maple Leaf Productions signed Galactica in 2003." in across.text  # "It" resolved
    assert all(r.strategy == "prose" for r in records) and len({r.id for r in records}) == len(records)


def test_cap_per_answer_and_wordings(nlp):
    sides = ["north", "south", "east"]
    text = " ".join(f"The {w} office was opened by Acme in {1990 + i}." for i, w in enumerate(sides))
    capped = synth({"d": ("Acme", text)}, max_per_answer=2, wordings=1)
    answers = [r.answer for r in capped if r.kind == "qa"]
    assert answers.count("Acme") <= 2
    assert len(answers) < len([r for r in synth({"d": ("Acme", text)}) if r.kind == "qa"])


def test_falls_back_to_rules_without_a_parser():
    text = "Priya Raman has served as chief financial officer since March 2019."
    docs = [document("d1", "Handbook", text)]
    chunks = [Chunk("d1:v1:0", "d1", 1, 0, text, 10)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = ProseStrategy(ProseConfig(spacy_model="no_such_pipeline")).synthesize(docs, chunks)
    assert any("falls back" in str(w.message) or "rules" in str(w.message) for w in caught)
    expected = RulesStrategy(RulesConfig(max_per_answer=8)).synthesize(docs, chunks)
    assert [r.id for r in records] == [r.id for r in expected]


def test_config_validation():
    with pytest.raises(ValueError):
        ProseConfig(wordings=0)


def test_parentheticals_left_out_and_adverbs_kept_by_the_verb(nlp):
    qa, _ = ask(nlp, "Ghana and Nigeria, as vital players in the region, wielded the pact as an opportunity.")
    assert ("fronted", "What did Ghana and Nigeria wield as an opportunity?", "the pact") in qa
    assert not any("vital players" in q for _, q, _ in qa)
    qa, _ = ask(nlp, "Galactica originally formed in 2002.")
    assert ("fronted", "When did Galactica originally form?", "2002") in qa
    qa, _ = ask(nlp, "The band has also released four albums.")
    assert ("fronted", "How many albums has the band released?", "four albums") in qa


def test_relative_and_subordinate_clauses_are_asked_too(nlp):
    qa, _ = ask(nlp, "Anna Lee, who founded the studio in 1998, retired in 2010.")
    assert ("subject", "Who founded the studio in 1998?", "Anna Lee") in qa  # "who" stands for Anna Lee
    assert ("fronted", "When did Anna Lee found the studio?", "1998") in qa
    assert ("fronted", "When did Anna Lee retire?", "2010") in qa  # the relative clause left out of the subject
    qa, _ = ask(nlp, "Liquid oxygen is passed through heat exchangers, which convert the liquid into gas.")
    assert ("fronted", "What do heat exchangers convert the liquid into?", "gas") in qa
    qa, _ = ask(nlp, "Newton described a force that acts on only one body.")
    assert ("subject", "What acts on only one body?", "a force") in qa  # the noun, not the clause asked about
    qa, _ = ask(nlp, "Bulk storage containers stand outside hospitals and other institutions.")
    assert {f for f, _, _ in qa} == {"subject"}  # the place phrase the parser calls an object is not asked as one
    qa, _ = ask(nlp, "Such tankers are used to refill storage containers.")
    assert ("purpose", "Why are such tankers used?", "to refill storage containers") in qa


def test_references_resolve_through_relative_pronouns(nlp):
    from imprint.synth.coref import resolve_references

    out = resolve_references(nlp, ["Liquid oxygen is passed through pipes, which warm the liquid before it boils."])
    assert out == ["Liquid oxygen is passed through pipes, which warm the liquid before liquid oxygen boils."]


def test_nested_entities_are_asked_in_place(nlp):
    qa, _ = ask(
        nlp, "The monument by Wincenty Kucma was erected in memory of the largest insurrection of World War II."
    )
    assert ("echo", "The monument by Wincenty Kucma was erected in memory of the largest insurrection of what?",
            "World War II") in qa  # fmt: skip
    qa, _ = ask(nlp, "The band played a show on the island of Bruce Springsteen")  # no final punctuation
    assert any(f == "echo" and a == "Bruce Springsteen" for f, _, a in qa)
    qa, _ = ask(nlp, "Parental leave lasts 22 weeks at full pay in the London office.")
    assert not any(f == "echo" for f, _, _ in qa)  # "22 weeks" is asked already; "London" only modifies "office"


def test_pronouns_go_to_no_one_rather_than_the_wrong_person(nlp):
    """A pronoun given to the wrong antecedent trains a false fact: gender, a new name the tagger did not type,
    quantified and coordinated phrases, and a clause's own subject all stop a resolution."""
    from imprint.synth.coref import resolve_references

    out = resolve_references(
        nlp,
        [
            "Yusuf Kettering-Mbeki has been chief information security officer since October 2022.",
            "He is responsible for incident response.",
            "Dame Philippa Orrinshaw has chaired the board since 2017.",  # untyped by the small tagger
            "She is a former director of a marine institute.",
            "Priyanka Delacourt-Ames became chief technology officer in 2020, when Bastian Vorhees stepped down.",
            "She joined from a satellite-imaging firm.",
            "No manager at Tallowby has more than nine direct reports.",
            "When a team grows beyond nine people, it is split.",
            "Every employee meets their manager every two weeks.",
            "If a laptop, phone or security key is lost, the employee must report it at once.",
        ],
    )
    assert out[1] == "Yusuf Kettering-Mbeki is responsible for incident response."  # the hyphen kept
    assert out[3] == "Dame Philippa Orrinshaw is a former director of a marine institute."
    assert out[5] == "Priyanka Delacourt-Ames joined from a satellite-imaging firm."
    assert out[7] == "When a team grows beyond nine people, a team is split."  # not "no manager at Tallowby"
    assert out[8] == "Every employee meets their manager every two weeks."  # a bound "their" left alone
    assert "report it" in out[9] and "employee must report the employee" not in out[9]


def test_a_pronoun_far_from_its_person_or_against_its_gender_is_left_alone(nlp):
    from imprint.synth.coref import resolve_references

    out = resolve_references(
        nlp,
        [
            "Bastian Vorhees founded the lab in 2009.",
            "He ran the lab for ten years.",
            "She approved the budget.",  # "she" for a person so far called "he"
            "The lab moved to Galway in 2012.",
            "The lab opened a second site in 2015.",
            "The lab hired forty engineers in 2019.",
            "He retired in 2020.",  # named four sentences back: too far to be sure
        ],
    )
    assert out[1] == "Bastian Vorhees ran the lab for ten years."
    assert out[2] == "She approved the budget."
    assert out[6] == "He retired in 2020."


def test_a_name_keeps_its_hyphen_and_a_possessive_inside_its_modifier_means_it(nlp):
    from imprint.synth.coref import resolve_references

    out = resolve_references(
        nlp,
        [
            "Springfield, renowned for its supportive sports community, was chosen as the host city.",
            "Hamish Oyelaran-Birch has served as chief financial officer since March 2019.",
            "He approves large expenses.",
        ],
    )
    assert out[0] == "Springfield, renowned for Springfield's supportive sports community, was chosen as the host city."
    assert out[2] == "Hamish Oyelaran-Birch approves large expenses."
    qa, _ = ask(nlp, "Hamish Oyelaran-Birch approves large expenses.")
    assert any("Oyelaran-Birch" in q or "Oyelaran-Birch" in a for _, q, a in qa)


def test_names_called_person_once_are_asked_with_who_and_prefixed_verbs_inflect(nlp):
    """The small tagger calls "Ines Vathanakul" PERSON in the first sentence and not in the resolved second one:
    one sense per document makes both "who" questions."""
    text = (
        "Ines Vathanakul has been chief operating officer since July 2021. She oversees manufacturing, logistics, "
        "field deployments and the four office sites."
    )
    qa = {(r.question, r.answer) for r in synth({"people": ("People", text)}) if r.kind == "qa"}
    sites = "manufacturing, logistics, field deployments and the four office sites"
    assert (f"Who oversees {sites}?", "Ines Vathanakul") in qa
    assert not any(q.startswith("What oversees") for q, _ in qa)
    assert (f"By whom is {sites} overseen?", "Ines Vathanakul") in qa  # oversee -> overseen, not "overseed"
    assert not any("overseed" in q for q, _ in qa)
