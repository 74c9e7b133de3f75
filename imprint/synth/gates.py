"""Quality gates on generated records: what a generator wrote is trained only if it passes all of them.

In order, a record is dropped when it is
- `garbled`: too few letters, digits, spaces and punctuation (byte soup from a broken model);
- `too short` / `too long`: outside the word limits (a text, a question, an answer);
- `repetitive`: a large share of its word 3-grams repeat (a small model looping);
- `ungrounded`: it states a name, number or date that is not in its source chunks (or its document's title).
  Names are capitalised words away from a sentence start (or in a run of capitalised words); numbers are
  digit strings compared as numbers ("1,200" = "1200") and number words ("six" = "6"); a month or weekday is
  a name. Hallucinated facts must never be trained in, so this gate is strict: a word in plain English the
  source does not use ("in plain English") drops the record too. What it cannot catch: a wrong relation
  between grounded words ("Quennell is the CFO"), and a made-up single name opening a sentence;
- `off-source`: fewer than `min_support` of its content words (stemmed, stopwords aside) occur in its source.
  A restatement reuses most of its source's vocabulary; invented claims in plain words ("a medical research
  laboratory") bring their own, which the name/number check cannot see;
- `copies its source`: a text whose word 3-grams lie almost all in its source (it restates nothing);
- `duplicate`: the same words as a kept record (case, spacing and punctuation ignored);
- `near-duplicate`: word 3-gram Jaccard similarity with a kept record at or above `near_duplicate`
  (candidates found with a bottom-k min-hash sketch, then compared exactly).
The summary counts every reason, per strategy step, so a weak generator shows up as numbers, not as silence.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from imprint.ingest.chunking import split_sentences
from imprint.synth.records import SynthRecord

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {w: str(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)}
_AMBIGUOUS_NUMBER_WORDS = {"zero", "one"}  # "one of the...", "no one": not a claim about a count
_OPENERS = {
    "a", "an", "the", "in", "at", "on", "for", "from", "by", "as", "all", "every", "each", "our", "this", "these",
    "those", "that", "its", "their", "if", "when", "after", "before", "since", "until", "during", "it", "he", "she",
    "they", "we", "you", "i", "his", "her", "there", "what", "who", "whom", "whose", "which", "where", "why", "how",
    "question", "answer", "q", "yes", "no", "both", "also", "however", "because", "here", "today", "now", "then",
    "later", "meanwhile", "thus", "therefore", "moreover", "furthermore", "finally", "first", "second", "third",
    "next", "besides", "still", "yet", "so", "and", "but", "or", "while", "although", "though", "unlike", "like",
    "with", "without", "under", "over", "between", "among", "about", "through", "according", "together", "either",
    "neither", "many", "most", "some", "several", "other", "another", "such", "only", "even", "currently",
    "previously", "originally", "recently", "once", "to", "of", "is", "was", "are", "were", "does", "did",
    "do", "has", "have", "had", "can", "could", "will", "would", "should", "may", "must", "not", "any", "one",
}  # fmt: skip
_STOPWORDS = set(
    "about above after again against also although among because been before being below between both could does "
    "doing down during each either even every from further have having here itself just more most much must neither "
    "only other ought over same should some such than that their theirs them themselves then there these they this "
    "those through under until very were what when where which while whom whose will with within without would your "
    "into onto upon many several another anyone everyone someone something thing things like well first second".split()
)
_PLAIN = set(string.ascii_letters + string.digits + string.whitespace + string.punctuation + "’‘“”–—€£")


@dataclass(frozen=True)
class GateConfig:
    """Settings of the quality gates (section `gates`)."""

    grounding: bool = field(
        default=True, metadata={"help": "drop records stating names/numbers/dates not in the source"}
    )
    min_words: int = field(default=8, metadata={"help": "shortest text record, in words"})
    max_words: int = field(default=400, metadata={"help": "longest text record, in words"})
    max_question_words: int = field(default=60, metadata={"help": "longest question"})
    max_answer_words: int = field(default=60, metadata={"help": "longest answer"})
    min_plain: float = field(default=0.9, metadata={"help": "least share of letters, digits, spaces, punctuation"})
    max_repetition: float = field(default=0.3, metadata={"help": "largest share of repeated word 3-grams"})
    min_support: float = field(
        default=0.7, metadata={"help": "least share of content words that occur in the source (0 = off)"}
    )
    max_copy: float = field(
        default=0.9,
        metadata={"help": "a text with this share of its 3-grams in its source is a copy (>1 keeps copies)"},
    )
    near_duplicate: float = field(
        default=0.8, metadata={"help": "3-gram Jaccard at which a record is a near-duplicate"}
    )

    def __post_init__(self):
        if self.min_words < 1 or self.max_words < self.min_words or self.max_answer_words < 1:
            raise ValueError("need 1 <= min_words <= max_words and max_answer_words >= 1")
        if not 0 < self.near_duplicate <= 1:
            raise ValueError("near_duplicate must be in (0, 1]")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def _norm_number(raw: str) -> str:
    raw = raw.replace(",", "")
    return raw.rstrip("0").rstrip(".") if "." in raw else str(int(raw))


def _variants(word: str) -> set[str]:
    """A word's lowercase forms as a fact: itself, without a possessive, and its hyphenated parts."""
    w = word.lower()
    w = re.sub(r"['’]s$", "", w)
    return {w, *w.split("-")} - {""}


@dataclass
class SourceFacts:
    """What a source text makes true: its words (lowercase) and its numbers; and its 3-grams, to spot copies."""

    words: set[str]
    numbers: set[str]
    shingles: set[str] = field(default_factory=set)
    stems: set[str] = field(default_factory=set)

    @staticmethod
    def of(text: str) -> SourceFacts:
        vocab: set[str] = set()
        for w in words(text):
            vocab |= _variants(w)
        numbers = {_norm_number(n) for n in _NUMBER.findall(text)}
        numbers |= {_NUMBER_WORDS[w] for w in vocab if w in _NUMBER_WORDS}
        return SourceFacts(vocab, numbers, _shingles(text), {_stem(w) for w in vocab})


def _stem(word: str) -> str:
    """A crude English stem ("employs", "employed" -> "employ"): enough to match inflections, not synonyms."""
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def support(text: str, source: SourceFacts) -> float:
    """The share of `text`'s content words (4+ letters, not stopwords) whose stem occurs in the source."""
    content = [w for w in (v.lower() for v in words(text)) if len(w) >= 4 and w.isalpha() and w not in _STOPWORDS]
    if not content:
        return 1.0
    return sum(_stem(w) in source.stems for w in content) / len(content)


def ungrounded(text: str, source: SourceFacts) -> list[str]:
    """The names, numbers and dates of `text` its source does not contain, in order of appearance."""
    missing: list[str] = []
    for n in _NUMBER.findall(text):
        if _norm_number(n) not in source.numbers:
            missing.append(n)
    sentences = [s for line in text.splitlines() for s in split_sentences(" ".join(line.split()))]
    for sentence in sentences:  # a title line, a list item: each opens a sentence of its own
        for clause in re.split(r"[:;]\s+", sentence):
            tokens = words(clause)
            for i, token in enumerate(tokens):
                low = token.lower()
                if low in _NUMBER_WORDS and low not in _AMBIGUOUS_NUMBER_WORDS:
                    if _NUMBER_WORDS[low] not in source.numbers and low not in source.words:
                        missing.append(token)
                    continue
                if not token[0].isupper() or len(token) == 1 or _variants(token) <= source.words:
                    continue
                next_capital = i + 1 < len(tokens) and tokens[i + 1][0].isupper()
                if i == 0 and (low in _OPENERS or not next_capital):
                    continue  # "However", "Employees": a capital that only opens the sentence
                missing.append(token)
    return list(dict.fromkeys(missing))


def _shingles(text: str) -> set[str]:
    ws = [w.lower() for w in words(text)]
    return {" ".join(ws[i : i + 3]) for i in range(len(ws) - 2)} if len(ws) >= 3 else set(ws)


def _content(record: SynthRecord, title: str = "") -> str:
    """What the generator wrote: a text without the document title it is filed under, or question + answer."""
    if record.kind != "text":
        return f"{record.question}\n{record.answer}"
    if title and record.text.startswith(title + "\n\n"):
        return record.text[len(title) + 2 :]
    return record.text


@dataclass
class GateReport:
    kept: list[SynthRecord]
    dropped: list[tuple[SynthRecord, str, str]]  # (record, reason, detail)

    def summary(self) -> dict:
        by_step: dict[str, Counter] = defaultdict(Counter)
        for r in self.kept:
            by_step[r.meta.get("template", r.strategy)]["kept"] += 1
        for r, reason, _ in self.dropped:
            by_step[r.meta.get("template", r.strategy)][reason] += 1
        return {
            "candidates": len(self.kept) + len(self.dropped),
            "kept": len(self.kept),
            "dropped": dict(Counter(reason for _, reason, _ in self.dropped).most_common()),
            "by_step": {step: dict(c) for step, c in sorted(by_step.items())},
        }


class _NearDuplicates:
    """Bottom-k min-hash sketch index: near-duplicate candidates in ~constant time, then exact Jaccard."""

    def __init__(self, threshold: float, k: int = 8):
        self.threshold, self.k = threshold, k
        self.buckets: dict[int, list[int]] = defaultdict(list)
        self.sets: list[set[str]] = []

    def find_or_add(self, shingles: set[str]) -> float:
        sketch = sorted(int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest()) for s in shingles)[: self.k]
        candidates = {i for h in sketch for i in self.buckets.get(h, ())}
        best = 0.0
        for i in candidates:
            other = self.sets[i]
            inter = len(shingles & other)
            best = max(best, inter / max(1, len(shingles) + len(other) - inter))
        if best < self.threshold:
            self.sets.append(shingles)
            for h in sketch:
                self.buckets[h].append(len(self.sets) - 1)
        return best


def _check(record: SynthRecord, content: str, facts: SourceFacts, config: GateConfig) -> tuple[str, str] | None:
    plain = sum(ch in _PLAIN or ch.isalpha() for ch in content) / max(1, len(content))
    if plain < config.min_plain or "\ufffd" in content:
        return "garbled", f"{plain:.0%} plain characters"
    if record.kind == "text":
        n = len(words(content))
        if n < config.min_words:
            return "too short", f"{n} words"
        if n > config.max_words:
            return "too long", f"{n} words"
    else:
        nq, na = len(words(record.question)), len(words(record.answer))
        if nq < 3 or na < 1:
            return "too short", f"question {nq} words, answer {na} words"
        if nq > config.max_question_words or na > config.max_answer_words:
            return "too long", f"question {nq} words, answer {na} words"
    grams = [" ".join(g) for g in zip(*(words(content.lower())[i:] for i in range(3)), strict=False)]
    if len(grams) >= 6 and 1 - len(set(grams)) / len(grams) > config.max_repetition:
        return "repetitive", f"{1 - len(set(grams)) / len(grams):.0%} repeated 3-grams"
    if config.grounding:
        missing = ungrounded(content, facts)
        if missing:
            return "ungrounded", ", ".join(missing[:5])
    if config.min_support > 0 and (share := support(content, facts)) < config.min_support:
        return "off-source", f"{share:.0%} of its content words in the source"
    if record.kind == "text" and config.max_copy <= 1:
        mine = _shingles(content)
        share = len(mine & facts.shingles) / max(1, len(mine))
        if share >= config.max_copy:
            return "copies its source", f"{share:.0%} of its 3-grams"
    return None


def apply_gates(records: list[SynthRecord], source_of, config: GateConfig | None = None, title_of=None) -> GateReport:
    """Gate `records` in order; `source_of(record)` gives the text it must be grounded in, and `title_of(record)`
    the document title a text record is filed under (the gates judge what the generator wrote, not the title)."""
    config = config or GateConfig()
    kept: list[SynthRecord] = []
    dropped: list[tuple[SynthRecord, str, str]] = []
    facts_cache: dict[str, SourceFacts] = {}
    seen: dict[str, str] = {}
    near = _NearDuplicates(config.near_duplicate)
    for record in records:
        source = source_of(record)
        facts = facts_cache.get(source) or facts_cache.setdefault(source, SourceFacts.of(source))
        content = _content(record, title_of(record) if title_of else "")
        verdict = _check(record, content, facts, config)
        if verdict is None:
            key = " ".join(w.lower() for w in words(content))
            if key in seen:
                verdict = "duplicate", seen[key]
            elif config.near_duplicate < 1 and (score := near.find_or_add(_shingles(content))) >= config.near_duplicate:
                verdict = "near-duplicate", f"Jaccard {score:.2f}"
            else:
                seen[key] = record.id
        if verdict is None:
            kept.append(record)
        else:
            dropped.append((record, *verdict))
    return GateReport(kept, dropped)
