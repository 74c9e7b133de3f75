"""The offline, rule-based strategy: several restatements of every fact, with no generator model.

Why: a model trained on one phrasing of each fact memorises it but cannot answer questions about it; with
several phrasings, permutations and question-answer pairs it can (Allen-Zhu & Li, Physics of Language Models
3.1: 9.7% -> 96.6% held-out QA). From each chunk this strategy writes
- the chunk itself under its document title (`raw`), and its sentences shuffled (`permuted`);
- entity-centred restatements: every sentence of a document that names an entity, gathered under that entity;
- wh-questions: each answer-like span (a name, date, amount, percentage, count) is replaced by the matching
  question word ("Priya Raman joined in 2019." -> "When did..." / "Priya Raman joined when?");
- cloze pairs: the sentence with the span blanked, answered by the span.
Leading pronouns are resolved to the last named person of the previous sentence so no question is orphaned.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field

from imprint.ingest.chunking import split_sentences
from imprint.synth.records import SynthRecord

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_NUM = r"\d[\d,]*(?:\.\d+)?"
_PATTERNS: list[tuple[str, str]] = [
    ("date", rf"\b(?:(?:\d{{1,2}} )?(?:{_MONTHS})(?: \d{{1,2}}(?:st|nd|rd|th)?,?)?(?: \d{{4}})?|(?:19|20)\d{{2}})\b"),
    (
        "money",
        rf"(?:[$€£]\s?{_NUM}(?: (?:million|billion|thousand))?"
        rf"|\b{_NUM} (?:million |billion )?(?:dollars|euros|pounds|USD|EUR|GBP)\b)",
    ),
    ("percent", rf"\b{_NUM}(?: ?%| percent\b)"),
    ("time", r"\b\d{1,2}(?::\d{2})? ?(?:a\.m\.|p\.m\.|am|pm)\b|\b\d{1,2}:\d{2}\b"),
    (
        "count",
        rf"\b{_NUM} (?!(?:percent|of|and|or|to|in|at|on|the|a|an|per|by|for|from|is|are|was|were)\b)[a-z]+(?:-[a-z]+)?",
    ),
    ("number", rf"\b{_NUM}\b"),
]
_CONNECT = ("of", "de", "van", "von", "der", "du", "la", "le", "the", "for")
# Capitalised words, joined by the particles of names ("Bank of Alder", "Anna van Dijk"); a possessive 's is
# left outside the span so "Priya Raman's team" yields the name, asked as "whose".
_NAME = re.compile(rf"\b[A-Z][\w.-]*[\w](?:\s+(?:(?:{'|'.join(_CONNECT)})\s+)*[A-Z][\w-]*[\w])*")
_ROLE = re.compile(
    r"\b(?:chief|officer|director|manager|head of|founder|co-founder|president|engineer|assistant|coordinator|"
    r"advisor|adviser|analyst|chair|chairperson|ceo|cfo|cto|coo|vp|ombudsperson|hired|joined|appointed|"
    r"he|she|his|her|him|mr|mrs|ms|dr)\b",
    re.I,
)
# Capitalised function words that open a sentence ("The Rotterdam office", "In London") are not part of a name.
_OPENERS = {
    "The",
    "A",
    "An",
    "In",
    "At",
    "On",
    "For",
    "From",
    "By",
    "As",
    "All",
    "Every",
    "Each",
    "Our",
    "This",
    "These",
    "Those",
    "That",
    "Its",
    "Their",
    "If",
    "When",
    "After",
    "Before",
    "Since",
    "Until",
    "During",
}
_NON_PERSON = re.compile(
    r"\b(?:Inc|Ltd|LLC|Corp|Corporation|Company|Group|Labs?|Office|Centre|Center|Street|St|Road|Avenue|Building|"
    r"Hall|Park|Program|Programme|Policy|Fund|Plan|Team|Department|Committee|Council|Project|Platform|System|"
    r"Suite|Campus|Tower|House|Day|Week|Award|Handbook|Portal|App|Service|Services|Card|Account|Systems|"
    r"Technologies|Solutions|Partners|Holdings|Industries|Bank|University|Institute|Foundation|Agency|"
    r"Association|Society|Network|Studio|Studios|Works|Museum|Hospital|School|College|Library|Airport|Station)\b"
)
_WHERE_PREP = re.compile(r"\b(?:in|at|near|from|to)\s+$", re.I)
_DATE_PREP = re.compile(r"\b(?:in|on|since|by|until|from|before|after|during)\s+$", re.I)
_PRONOUN = re.compile(r"^(He|She|His|Her)\b")


@dataclass(frozen=True)
class RulesConfig:
    """Knobs of the offline strategy."""

    permutations: int = field(default=3, metadata={"help": "shuffled copies of each chunk's sentences"})
    cloze: bool = field(default=True, metadata={"help": "also write fill-in-the-blank pairs"})
    max_spans_per_sentence: int = field(default=4, metadata={"help": "answer spans questioned per sentence"})
    max_per_answer: int = field(
        default=6, metadata={"help": "question-answer pairs kept per distinct answer (stops 'the company' dominating)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for permutations"})

    def __post_init__(self):
        if self.permutations < 0 or self.max_spans_per_sentence < 1 or self.max_per_answer < 1:
            raise ValueError("permutations must be >= 0, max_spans_per_sentence and max_per_answer >= 1")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str

    def text(self, sentence: str) -> str:
        return sentence[self.start : self.end]


def _strip_markdown(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\s{0,3}(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s?)", "", line)
        lines.append(re.sub(r"[*_`]{1,3}([^*_`]+)[*_`]{1,3}", r"\1", line))
    return "\n".join(lines)


def sentences_of(text: str) -> list[str]:
    """Sentences of a chunk, markdown removed; a heading line ending without a period is dropped."""
    out = []
    for para in re.split(r"\n\s*\n|\n(?=\S)", _strip_markdown(text)):
        para = " ".join(para.split())
        if not para:
            continue
        if not re.search(r"[.!?:;]$", para) and len(para.split()) <= 8:
            continue  # a heading: kept in `raw`, not a fact on its own
        out.extend(s.strip() for s in split_sentences(para) if len(s.split()) >= 3)
    return out


def find_spans(sentence: str, known_names: set[str]) -> list[Span]:
    """Answer-like spans, longest first and non-overlapping: dates, amounts, counts, then proper names."""
    taken: list[Span] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s.start or a >= s.end for s in taken)

    for kind, pattern in _PATTERNS:
        for m in re.finditer(pattern, sentence):
            if m.group().strip() and free(m.start(), m.end()):
                taken.append(Span(m.start(), m.end(), kind))
    for m in _NAME.finditer(sentence):
        a, b, word = m.start(), m.end(), m.group()
        first = word.split(" ", 1)[0]
        if first in _OPENERS and " " in word:
            a, word = a + len(first) + 1, word[len(first) + 1 :]
        if a == 0 and " " not in word and word not in known_names:
            continue  # a capitalised sentence opener ("Employees", "The"), not a name
        if word.lower() in _CONNECT or word in _OPENERS or not free(a, b):
            continue
        taken.append(Span(a, b, "name"))
    return sorted(taken, key=lambda s: s.start)


def mid_sentence_names(sentences: list[str]) -> set[str]:
    """Capitalised words seen away from a sentence start: evidence they are names, not openers."""
    names = set()
    for s in sentences:
        for m in _NAME.finditer(s):
            if m.start() > 0:
                names.update(m.group().split())
    return names


def _is_person(name: str, sentence: str) -> bool:
    words = name.split()
    return 2 <= len(words) <= 4 and not _NON_PERSON.search(name) and bool(_ROLE.search(sentence))


def people_of(sentences: list[str], known: set[str]) -> set[str]:
    """Names that look like a person in at least one sentence of the document (role words, he/she...)."""
    return {
        sp.text(s) for s in sentences for sp in find_spans(s, known) if sp.kind == "name" and _is_person(sp.text(s), s)
    }


_AUX = re.compile(
    r"^(?P<subj>.+?) (?P<aux>is|are|was|were|has|have|had|can|may|must|will|should|would|could)\b"
    r"(?P<mid>.*)$"
)
_SHORT_TAIL = re.compile(r"^\s+(?:in|at|on|for|per|to|from|with|by|of|during|each|every)\b(?:\s+[\w'’-]+){1,4}$")
_PRESENT = re.compile(r"^(?P<subj>.+?) (?P<verb>[a-z]{3,}[^s]s)\b(?P<mid>.*)$")


def _question_word(sentence: str, span: Span, people: set[str]) -> tuple[str, str, str] | None:
    """(question word, text before the span minus a consumed preposition, text after it); None if none fits."""
    before, answer, after = sentence[: span.start], span.text(sentence), sentence[span.end :]
    if span.kind == "date":
        wh = "when"
        prep = _DATE_PREP.search(before)
        if prep:
            word = prep.group().strip().lower()
            before = before[: prep.start()]
            wh = "when" if word in ("in", "on", "during") else f"{word} when"
    elif span.kind == "money":
        wh = "how much"
    elif span.kind == "percent":
        wh = "what percentage"
    elif span.kind == "time":
        wh = "what time"
    elif span.kind == "count":
        wh = f"how many {answer.split(' ', 1)[1]}"
    elif span.kind == "number":
        wh = "what number"
    elif answer in people or _is_person(answer, sentence):
        wh = "who"
        if re.match(r"['’]s\b", after):
            wh, after = "whose", after[2:]
    elif re.match(r"['’]s\b", after):
        return None  # "Tallowby's largest customer": no clean question word for a thing's possessive
    elif _WHERE_PREP.search(before) and before.strip():
        wh = "where"
        before = before[: _WHERE_PREP.search(before).start()]
    else:
        wh = "what"
    return wh, before, after


def _finish(question: str) -> str:
    question = re.sub(r"\s+", " ", question).strip().rstrip(" .!;:,")
    return question[0].upper() + question[1:] + "?"


def wh_question(sentence: str, span: Span, people: set[str] = frozenset()) -> str | None:
    """Replace a span by its question word: a subject span gives a true question, others an echo question."""
    parts = _question_word(sentence, span, people)
    if parts is None:
        return None
    wh, before, after = parts
    return _finish(f"{before}{wh}{after}")


def fronted_question(sentence: str, span: Span, people: set[str] = frozenset(), names: set[str] = frozenset()):
    """The question word moved to the front with subject-auxiliary inversion, or None when no rule applies.

    "Priya Raman has served as CFO since March 2019." -> "Since when has Priya Raman served as CFO?";
    "Parental leave lasts 22 weeks at full pay." -> "How many weeks does parental leave last at full pay?"
    """
    parts = _question_word(sentence, span, people)
    if parts is None:
        return None
    wh, before, after = parts
    before = before.strip()
    if not before or wh == "whose":
        return None
    after = "" if after.lstrip().startswith((",", ";", "(")) else after.rstrip(" .!?")
    if after and not _SHORT_TAIL.match(after):
        return None  # the span is mid-clause: moving it to the front would scramble the sentence
    if m := _AUX.match(before):
        subj, aux, mid = m.group("subj"), m.group("aux"), m.group("mid")
    elif m := _PRESENT.match(before):
        subj, aux, mid = m.group("subj"), "does", " " + m.group("verb")[:-1] + m.group("mid")
    else:
        return None
    if (
        len(subj.split()) > 8
        or re.search(r"[,;:\"]", subj + mid)
        or re.search(r"\d", subj)
        or re.search(r"\band\s*$", mid)
        or re.match(r"\s*and\b", after)
    ):
        return None  # clauses and coordinations do not invert cleanly: keep only the echo form
    words = subj.split()
    proper = len(words) > 1 and words[1][:1].isupper()
    if words[0] in _OPENERS or (words[0] not in names and not proper and not re.match(r"^[A-Z]{2,}", words[0])):
        first = words[0]
        subj = first.lower() + subj[len(first) :]  # "The head of ..." -> "the head of ..." mid-question
    return _finish(f"{wh} {aux} {subj}{mid}{after}")


def cloze(sentence: str, span: Span) -> str:
    return "Fill in the blank: " + sentence[: span.start] + "____" + sentence[span.end :]


def resolve_pronouns(sentences: list[str]) -> list[str]:
    """'She joined in 2019.' -> 'Priya Raman joined in 2019.' when the previous sentence opens with a person."""
    out, last_person = [], None
    known = mid_sentence_names(sentences)
    for s in sentences:
        m = _PRONOUN.match(s)
        if m and last_person:
            word = m.group(1)
            s = (last_person + ("'s" if word in ("His", "Her") else "")) + s[len(word) :]
        out.append(s)
        people = [sp.text(s) for sp in find_spans(s, known) if sp.kind == "name" and _is_person(sp.text(s), s)]
        if people:
            last_person = people[0]
    return out


def cap_per_answer(records: list[SynthRecord], limit: int, rng: random.Random) -> list[SynthRecord]:
    """Keep at most `limit` pairs per answer, so a name answering dozens of blanks (usually the organisation
    itself) does not become the model's reflex answer to every question."""
    by_answer: dict[str, list[SynthRecord]] = defaultdict(list)
    for r in records:
        by_answer[r.answer.lower()].append(r)
    kept = []
    for group in by_answer.values():
        kept.extend(group if len(group) <= limit else rng.sample(group, limit))
    keep = {r.id for r in kept}
    return [r for r in records if r.id in keep]


class RulesStrategy:
    """Registered as `rules`: no generator, deterministic for a given seed."""

    name = "rules"
    config_class = RulesConfig

    def __init__(self, config: RulesConfig | None = None):
        self.config = config or RulesConfig()

    def synthesize(self, documents, chunks) -> list[SynthRecord]:
        rng = random.Random(self.config.seed)
        titles = {d.id: d.title for d in documents}
        by_doc: dict[str, list] = defaultdict(list)
        for c in chunks:
            by_doc[c.doc_id].append(c)
        records: list[SynthRecord] = []
        for doc_id, doc_chunks in by_doc.items():
            title = titles.get(doc_id, "")
            doc_sentences: list[tuple[str, str]] = []  # (chunk_id, sentence)
            for c in doc_chunks:
                records.append(
                    SynthRecord.make("rules", [c.id], "text", text=f"{title}\n\n{c.text}".strip(), meta={"form": "raw"})
                )
                sents = resolve_pronouns(sentences_of(c.text))
                doc_sentences.extend((c.id, s) for s in sents)
                for _ in range(self.config.permutations if len(sents) > 1 else 0):
                    shuffled = sents[:]
                    rng.shuffle(shuffled)
                    records.append(
                        SynthRecord.make("rules", [c.id], "text", text=" ".join(shuffled), meta={"form": "permuted"})
                    )
            known = mid_sentence_names([s for _, s in doc_sentences])
            records.extend(self._cap_answers(self._questions(doc_sentences, known), rng))
            records.extend(self._entity_texts(doc_sentences, known))
        return list({r.id: r for r in records}.values())

    def _questions(self, doc_sentences: list[tuple[str, str]], known: set[str]) -> list[SynthRecord]:
        people = people_of([s for _, s in doc_sentences], known)
        out = []
        for chunk_id, s in doc_sentences:
            for span in find_spans(s, known)[: self.config.max_spans_per_sentence]:
                forms = {"wh": wh_question(s, span, people), "fronted": fronted_question(s, span, people, known)}
                if forms["wh"] is None:
                    continue  # no question word fits this span: a cloze alone would teach a dangling blank
                if self.config.cloze:
                    forms["cloze"] = cloze(s, span)
                for form, question in forms.items():
                    if question:
                        meta = {"form": form, "span": span.kind}
                        out.append(
                            SynthRecord.make(
                                "rules", [chunk_id], "qa", question=question, answer=span.text(s).strip(), meta=meta
                            )
                        )
        return out

    def _cap_answers(self, records: list[SynthRecord], rng: random.Random) -> list[SynthRecord]:
        return cap_per_answer(records, self.config.max_per_answer, rng)

    def _entity_texts(self, doc_sentences: list[tuple[str, str]], known: set[str]) -> list[SynthRecord]:
        mentions: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for chunk_id, s in doc_sentences:
            for span in find_spans(s, known):
                if span.kind == "name":
                    mentions[span.text(s)].append((chunk_id, s))
        out = []
        for entity, items in mentions.items():
            text = f"About {entity}: " + " ".join(dict.fromkeys(s for _, s in items))
            out.append(
                SynthRecord.make(
                    "rules", sorted({c for c, _ in items}), "text", text=text, meta={"form": "entity", "entity": entity}
                )
            )
        return out
