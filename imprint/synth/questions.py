"""Questions from a dependency parse: every argument of every clause asked, in several wordings.

From one parsed sentence ("In 2019 the company moved its workshop to Dunmere Quay because rents rose.") each
clause (a verb with its subject) yields, for each of its arguments:

- `subject`: the subject asked in place ("Who designed the bridge?");
- `fronted`: any other argument asked with the question word moved to the front and the subject and auxiliary
  inverted, with do-support ("What did the company move to Dunmere Quay in 2019?", "Where did the company move
  its workshop in 2019?", "Since when has Priya Raman served as CFO?");
- `short`: the same with only the clause's core arguments, so the fact is asked with less context;
- `context`: a time or place adjunct fronted as a setting ("In 2019, what did the company move ...?");
- `cause` / `purpose`: "because (of)", "due to", "so that", "in order to" and purpose infinitives asked with why;
- `passive` / `active`: the clause turned over, so the fact is asked from its other end ("What was designed by
  Anna Lee?" from an active sentence; "Who designed the bridge?" from "The bridge was designed by Anna Lee.");
- `appositive`: "E, a Canadian band," asked as "What is E?";
- `echo`: an entity nested inside a longer phrase, asked in place ("... the largest insurrection of what?"), so
  every entity of the sentence is an answer somewhere.

Clauses are main verbs, verbs coordinated with them, subordinate clauses of fact ("since ...") and relative
clauses ("exchangers, which convert ..." asks about the exchangers).

Text restatements from the other direction (`reversed`: "The capital of Poland is Warsaw.", "The bridge was
designed by Anna Lee.") are written alongside. Answers are spans of the sentence: entities of every type, noun
phrases headed by common nouns, numbers with their units, clauses of cause and purpose.

The rules are the classic overgenerate-and-filter recipe (Heilman & Smith 2010): a question holding an unresolved
pronoun, an answer inside its own question, or an over-long answer is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imprint.synth import verbs
from imprint.synth.coref import glued, path_to

_PERSON_PRONOUNS = {"he", "she", "him", "his", "her", "they", "them", "their", "it", "its", "this", "these", "those"}
_CORE = {"dobj", "attr", "oprd", "dative", "acomp", "prt", "agent", "neg"}
_SKIP = {"punct", "cc", "conj", "mark", "dep", "intj", "meta", "preconj", "case"}
_WHERE_PREPS = {"in", "at", "near", "to", "into", "within", "inside", "on", "across", "throughout"}
_WHEN_PREPS = {"in", "on", "at", "during"}
_WHEN_KEEP = {"since", "until", "by", "till"}
_PLACE = {"GPE", "LOC", "FAC"}
_TIME = {"DATE", "TIME"}
_NO_PASSIVE = {"have", "be", "get", "become", "seem", "remain", "lack", "resemble", "mean", "cost", "weigh", "last",
               "include", "contain", "comprise", "involve", "equal", "fit", "suit"}  # fmt: skip
_IDIOM_OBJECTS = {"place", "part", "care", "advantage", "effect", "account", "notice", "hold", "shape", "root"}
_DISCOURSE = {"however", "also", "still", "thus", "therefore", "moreover", "furthermore", "nevertheless", "then",
              "instead", "meanwhile", "though", "too", "already", "nonetheless", "hence", "indeed"}  # fmt: skip
_DO = {"VBD": "did", "VBZ": "does", "VBP": "do"}


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    form: str
    span: str  # what the answer is: an entity label (DATE, PERSON...), a relation (dobj, pobj), cause, purpose


@dataclass(frozen=True)
class Arg:
    """One constituent of a clause: tokens [start, end) of the sentence, attached to the verb by `dep`."""

    start: int
    end: int
    dep: str
    head: object  # the spaCy token heading it

    @property
    def tokens(self):
        return self.head.doc[self.start : self.end]


@dataclass
class Clause:
    verb: object
    subj: Arg
    auxes: list  # auxiliary and negation tokens before the verb
    args: list[Arg]  # everything else attached to the verb, in sentence order (pre-subject adjuncts included)

    @property
    def copula(self) -> bool:
        return self.verb.lemma_ == "be" and not self.auxes

    @property
    def passive(self) -> bool:
        return self.subj.dep == "nsubjpass"

    @property
    def tense(self) -> str:
        """The finite verb's tag; an aux-less "-ed" participle heading a clause is a mis-tagged past tense."""
        tag = self.verb.tag_
        return "VBD" if tag == "VBN" and not self.auxes and self.verb.lower_.endswith("ed") else tag


def _text(tokens) -> str:
    """Tokens as text; where tokens between two were left out ("Nigeria[,] as"), a space keeps the words apart."""
    tokens = list(tokens)
    pieces = []
    for t, nxt in zip(tokens, [*tokens[1:], None][: len(tokens)], strict=True):
        pieces.append(t.text + (t.whitespace_ if nxt is None or nxt.i == t.i + 1 else " "))
    return "".join(pieces).strip().strip(",;: ")


def _span(token, dep: str | None = None) -> Arg:
    return Arg(token.left_edge.i, token.right_edge.i + 1, dep or token.dep_, token)


# Subordinate clauses that state a fact of their own ("..., since one liter of liquid equals 840 liters of gas");
# conditions ("if", "unless") do not.
_FACT_MARKS = {"since", "because", "although", "though", "while", "whereas", "as", "after", "before", "when", "until"}


def _clause_head(verb) -> bool:
    """Whether a verb heads a clause worth asking about: a main verb, one coordinated with it, a subordinate
    clause of fact, or a relative clause whose subject is its relative pronoun ("exchangers, which convert ...")."""
    if verb.pos_ not in ("VERB", "AUX"):
        return False
    if verb.dep_ in ("ROOT", "conj"):
        return verb.dep_ == "ROOT" or verb.head.pos_ in ("VERB", "AUX")
    if verb.dep_ == "advcl":
        return any(c.dep_ == "mark" and c.lower_ in _FACT_MARKS for c in verb.children)
    if verb.dep_ == "relcl":
        return any(c.dep_ in ("nsubj", "nsubjpass") and c.tag_ in ("WDT", "WP") for c in verb.children)
    return False


def clauses(sent) -> list[Clause]:
    """Clauses with an explicit or shared subject (see `_clause_head`); a relative clause's subject is the noun
    phrase it modifies."""
    out = []
    for verb in sent:
        if not _clause_head(verb):
            continue
        subj = [c for c in verb.children if c.dep_ in ("nsubj", "nsubjpass")]
        auxes = [c for c in verb.children if c.dep_ in ("aux", "auxpass", "neg") and c.i < verb.i]
        owner = verb
        if not subj and verb.dep_ == "conj":
            owner = verb.head
            subj = [c for c in owner.children if c.dep_ in ("nsubj", "nsubjpass")]
            if not auxes and verb.tag_ == "VBN":
                auxes = [c for c in owner.children if c.dep_ in ("aux", "auxpass") and c.i < owner.i]
        if not subj or subj[0].pos_ == "PRON" and subj[0].lower_ in _PERSON_PRONOUNS:
            continue
        if (
            not auxes
            and verb.tag_ not in ("VBD", "VBZ", "VBP")
            and not (verb.tag_ == "VBN" and verb.lower_.endswith("ed"))
        ):
            continue  # not a finite clause ("... propelling Nigeria into ..."): nothing to invert
        subj_arg = _span(subj[0])
        if verb.dep_ == "relcl":  # "which" -> the noun phrase it stands for, without what follows the noun
            noun = verb.head
            subj_arg = Arg(noun.left_edge.i, noun.i + 1, subj[0].dep_, noun)
        args = []
        for child in verb.children:
            if child in subj or child in auxes or child.dep_ in _SKIP or child.dep_ in ("nsubj", "nsubjpass"):
                continue
            args.append(_span(child))
        out.append(Clause(verb, subj_arg, auxes, sorted(args, key=lambda a: a.start)))
    return out


def _ent(token) -> str:
    return token.ent_type_ or ""


def _trim(arg_head) -> list:
    """An answer span: the phrase a token heads, without relative clauses or appositions when they make it long."""
    tokens = [t for t in arg_head.subtree if not any(a.dep_ == "appos" for a in path_to(t, arg_head))]
    if len(tokens) > 8:
        cut = {"relcl", "acl", "advcl"}
        tokens = [t for t in tokens if not any(a.dep_ in cut for a in path_to(t, arg_head))]
    while tokens and tokens[-1].dep_ in ("punct", "cc"):
        tokens.pop()
    while tokens and tokens[0].dep_ in ("punct", "cc"):
        tokens.pop(0)
    return tokens


def _count(head):
    """The number counting a plural noun ("27 days of leave" -> 27), or None."""
    if head.pos_ != "NOUN" or head.tag_ != "NNS":
        return None
    number = [c for c in head.children if c.dep_ == "nummod" and c.like_num]
    return number[0] if number else None


def _answer(head) -> list:
    """The answer tokens for a phrase: a counted noun answers with its number and unit ("27 days")."""
    if (number := _count(head)) is not None:
        return [t for t in head.subtree if number.left_edge.i <= t.i <= head.i]
    return _trim(head)


def _plain_wh(head) -> str | None:
    """The question word for a noun phrase headed by `head`; None when it is not a worthwhile answer."""
    if head.pos_ == "PRON" or head.pos_ in ("ADV", "ADJ", "DET"):
        return None
    ent = _ent(head)
    if (number := _count(head)) is not None:
        skip = set(number.subtree)
        return "how many " + _text([t for t in head.subtree if t not in skip and t.i > number.i])
    if ent == "PERSON":
        return "who"
    if ent == "MONEY":
        return "how much"
    if ent == "PERCENT":
        return "what percentage"
    if ent in _TIME:
        return "when"
    return "what"


def _lower_first(tokens) -> str:
    text = _text(tokens)
    first = tokens[0] if len(tokens) else None
    if first is not None and first.i == first.sent.start and first.pos_ != "PROPN" and first.text != "I":
        text = text[:1].lower() + text[1:]
    return text


def _finish(words: list[str]) -> str:
    q = re.sub(r"\s+", " ", " ".join(w for w in words if w)).strip().rstrip(" .,;:!")
    q = re.sub(r"\s+([,;:])", r"\1", q).replace(" n't", " not")
    return q[:1].upper() + q[1:] + "?"


def _verb_parts(clause: Clause) -> tuple[str, str] | None:
    """(the word that moves before the subject, what stays after it) for subject-auxiliary inversion."""
    verb = clause.verb
    if clause.auxes:
        first, *rest = clause.auxes
        tail = " ".join(t.text for t in rest)
        return first.text.lower(), f"{tail} {verb.text}".strip()
    if clause.copula:
        return verb.text.lower(), ""
    do = _DO.get(clause.tense)
    if do is None:
        return None
    return do, verb.lemma_


def _arg_text(arg: Arg) -> str:
    return _lower_first(arg.tokens) if arg.start == arg.head.sent.start else _text(arg.tokens)


def _rest(clause: Clause, skip: Arg | None, core_only: bool, strand: Arg | None = None) -> tuple[list[str], list[str]]:
    """(arguments after the verb; adjuncts that opened the sentence, then short clauses) as text, minus `skip`; a
    stranded preposition stays where its phrase was. Phrases between subject and verb are parentheticals
    ("Ghana, as a member, wielded ...") and are left out; a one-word adverb there stays by the verb (`_adverbs`)."""
    after, before, clausal = [], [], []
    for arg in clause.args:
        if arg is skip:
            if strand is not None:
                after.append(_lower_first([strand.head]))
            continue
        if (core_only and arg.dep not in _CORE) or (arg.dep == "advmod" and arg.head.lower_ in _DISCOURSE):
            continue
        if arg.dep in ("advcl", "ccomp", "xcomp", "parataxis"):
            if len(arg.tokens) <= 8 and arg.tokens[0].dep_ == "mark":  # "before it enters ...", never a fragment
                clausal.append(_arg_text(arg))
            continue
        if clause.subj.start < arg.start < clause.verb.i:
            continue
        (before if arg.start < clause.subj.start else after).append(_arg_text(arg))
    return after, before + clausal


def _adverbs(clause: Clause) -> str:
    """One-word adverbs between subject and verb ("originally", "first"): kept in front of the verb."""
    return " ".join(
        a.head.text
        for a in clause.args
        if clause.subj.start < a.start < clause.verb.i
        and a.dep == "advmod"
        and a.end - a.start == 1
        and a.head.lower_ not in _DISCOURSE
    )


def _subject_text(clause: Clause) -> str:
    head = clause.subj.head

    def aside(a) -> bool:  # an apposition, or a clause set off by a comma ("Anna Lee, who founded ..., retired")
        return a.dep_ == "appos" or (
            a.dep_ in ("relcl", "acl") and a.left_edge.i > 0 and a.doc[a.left_edge.i - 1].text == ","
        )

    tokens = [t for t in clause.subj.tokens if not any(aside(a) for a in path_to(t, head))]
    return _lower_first([t for t in tokens if t.dep_ != "punct" or glued(t) or t.i > head.i and t.text not in ",;"])


def _ask(clause: Clause, wh: str, skip: Arg, core_only=False, strand=None, front: Arg | None = None) -> str | None:
    parts = _verb_parts(clause)
    if parts is None:
        return None
    moved, stay = parts
    after, before = _rest(clause, skip, core_only, strand)
    if (adverbs := _adverbs(clause)) and stay:
        stay = f"{' '.join(stay.split()[:-1])} {adverbs} {stay.split()[-1]}"  # "did the band originally form"
    if front is not None:
        front_text = _arg_text(front)
        if front_text in after:
            after.remove(front_text)
        if front_text in before:
            before.remove(front_text)
        return _finish([front_text + ",", wh, moved, _subject_text(clause), stay, *after, *before])
    return _finish([wh, moved, _subject_text(clause), stay, *after, *before])


def _ask_subject(clause: Clause, wh: str, core_only=False) -> str | None:
    after, before = _rest(clause, None, core_only)
    if not after and not before and not clause.copula:
        return None  # "Who was assembled?": a bare verb does not say which fact is asked
    words = [t.text for t in clause.auxes] + ([_adverbs(clause)] if _adverbs(clause) else []) + [clause.verb.text]
    head = words[0] if clause.auxes else clause.verb
    if head == clause.verb and clause.verb.tag_ == "VBP":
        words[-1] = verbs.third_person(clause.verb)
    elif clause.auxes and clause.auxes[0].lower_ in ("are", "have", "were", "do"):
        words[0] = {"are": "is", "have": "has", "were": "was", "do": "does"}[clause.auxes[0].lower_]
    return _finish([wh, " ".join(words), *after, *before])


def _object_wh(arg: Arg, clause_args=()) -> tuple[str, list, Arg | None] | None:
    """(question word, answer tokens, stranded-preposition arg) for a non-subject argument; None if not asked."""
    head = arg.head
    if arg.dep in ("dobj", "attr", "oprd", "dative"):
        if arg.tokens[0].tag_ == "IN":
            return None  # "stand outside hospitals" parsed as an object: a place phrase, not a thing
        if head.lower_ in _IDIOM_OBJECTS and not any(c.dep_ == "det" for c in head.children):
            return None  # "took place", "play a part": part of the verb, not an answer
        wh = _plain_wh(head)
        return (wh, _answer(head), None) if wh else None
    if arg.dep == "npadvmod" and _ent(head) in _TIME:
        return "when", _trim(head), None
    if arg.dep in ("prep", "agent"):
        objs = [c for c in head.children if c.dep_ == "pobj"]
        if not objs:
            return None
        obj, prep = objs[0], head.lower_
        ent = _ent(obj)
        if prep in ("because", "due", "owing") or (prep == "in" and obj.lower_ == "order"):
            return None  # asked as a cause or purpose
        if ent in _TIME:
            if prep in _WHEN_PREPS:
                return "when", _trim(obj), None
            if prep in _WHEN_KEEP:
                return f"{prep} when", _trim(obj), None
            return None
        if ent in _PLACE and prep in _WHERE_PREPS:
            return "where", _trim(obj), None
        wh = _plain_wh(obj)
        if wh is None:
            return None
        if any(a.dep == "acomp" for a in clause_args):
            return None  # "The delay can be expensive in cases of ...": no clean question about the phrase
        if wh.startswith(("how", "what percentage")):
            return f"{prep} {wh}", _answer(obj), None
        if wh == "who":
            return f"{prep} whom", _trim(obj), None
        return wh, _trim(obj), arg  # "What did the company move its workshop to?"
    return None


def _cause(clause: Clause) -> tuple[Arg, list, str] | None:
    """(the argument, answer tokens, cause or purpose) of a clause's because / so that / in order to phrase."""
    for arg in clause.args:
        head = arg.head
        marks = [c.lower_ for c in head.children if c.dep_ == "mark"]
        if arg.dep == "advcl" and "because" in marks:
            return arg, [t for t in arg.tokens if t.lower_ != "because" or t.i != arg.start], "cause"
        if arg.dep == "advcl" and "so" in marks and "that" in marks:
            return arg, list(arg.tokens), "purpose"
        infinitive = head.tag_ == "VB" and any(c.dep_ == "aux" and c.lower_ == "to" for c in head.children)
        if arg.dep == "advcl" and infinitive and arg.start > clause.verb.i:
            return arg, list(arg.tokens), "purpose"
        if arg.dep == "xcomp" and infinitive and clause.passive and clause.verb.lemma_ == "use":
            return arg, list(arg.tokens), "purpose"  # "Such tankers are used to refill containers."
        if arg.dep == "prep" and head.lower_ in ("because", "due", "owing"):
            objs = [c for c in head.subtree if c.dep_ == "pobj"]
            if objs:
                return arg, _trim(objs[0]), "cause"
        if arg.dep == "prep" and head.lower_ == "in" and any(c.lower_ == "order" for c in head.children):
            tail = [t for t in arg.tokens if t.i > head.i + 1]
            if tail and tail[0].lower_ == "to":
                return arg, tail, "purpose"
    return None


def _be(clause: Clause, plural: bool) -> str | None:
    tense = clause.tense if not clause.auxes else clause.auxes[0].tag_
    if clause.auxes or tense not in ("VBD", "VBZ", "VBP"):
        return None
    if tense == "VBD":
        return "were" if plural else "was"
    return "are" if plural else "is"


def _turned(clause: Clause) -> list[tuple[str, str, str, str, str]]:
    """Questions and a restatement from the clause turned over: (form, question, answer, span, restatement)."""
    out = []
    if not clause.passive:
        objs = [a for a in clause.args if a.dep == "dobj"]
        if not objs or clause.copula:
            return out
        obj = objs[0]
        if clause.verb.lemma_.lower() in _NO_PASSIVE or obj.head.lower_ in _IDIOM_OBJECTS or obj.tokens[0].tag_ == "IN":
            return out
        participle, be = verbs.participle(clause.verb), _be(clause, obj.head.tag_ in ("NNS", "NNPS"))
        if not participle or not be or _plain_wh(obj.head) is None or _plain_wh(clause.subj.head) is None:
            return out
        after, before = _rest(clause, obj, core_only=False)
        agent = _subject_text(clause)
        wh_obj = _plain_wh(obj.head)
        if wh_obj != "when":
            q = _finish([wh_obj, be, participle, "by", agent, *after, *before])
            out.append(("passive", q, _text(_answer(obj.head)), obj.head.ent_type_ or "dobj", ""))
        wh_agent = "by whom" if _ent(clause.subj.head) == "PERSON" else "by what"
        q = _finish([wh_agent, be, _text(obj.tokens), participle, *after, *before])
        out.append(("passive", q, _text(_trim(clause.subj.head)), clause.subj.head.ent_type_ or "nsubj", ""))
        statement = " ".join([_text(obj.tokens), be, participle, "by", agent, *after, *before])
        out.append(("reversed", "", "", "", _finish([statement])[:-1] + "."))
        return out
    agents = [a for a in clause.args if a.dep == "agent"]
    objs = [c for a in agents for c in a.head.children if c.dep_ == "pobj"]
    past = verbs.past(clause.verb)
    be = clause.auxes[-1].lower_ if clause.auxes else ""
    if not objs or past is None or be not in ("was", "were"):
        return out
    agent, rest = _text(objs[0].subtree), [_arg_text(a) for a in clause.args if a is not agents[0]]
    wh_subj = "who" if _ent(objs[0]) == "PERSON" else "what"
    out.append(
        (
            "active",
            _finish([wh_subj, past, _lower_first(clause.subj.tokens), *rest]),
            _text(_trim(objs[0])),
            objs[0].ent_type_ or "agent",
            "",
        )
    )
    wh_obj = "who" if _ent(clause.subj.head) == "PERSON" else "what"
    out.append(
        (
            "active",
            _finish([wh_obj, "did", agent, clause.verb.lemma_, *rest]),
            _text(_trim(clause.subj.head)),
            clause.subj.head.ent_type_ or "nsubjpass",
            "",
        )
    )
    statement = " ".join([agent, past, _lower_first(clause.subj.tokens), *rest])
    out.append(("reversed", "", "", "", statement[:1].upper() + statement[1:] + "."))
    return out


def _identifying(attr: Arg) -> bool:
    """Whether a copula's attribute picks out its subject: definite, a name, or a noun with its own modifiers
    ("a place of martyrdom for the Poles"), and not an amount."""
    head = attr.head
    if _ent(head) in ("MONEY", "PERCENT", "QUANTITY", "CARDINAL", "DATE", "TIME") or head.pos_ not in ("NOUN", "PROPN"):
        return False
    modified = any(c.dep_ in ("prep", "relcl", "acl") for c in head.children)
    return attr.tokens[0].lower_ == "the" or head.pos_ == "PROPN" or modified


def _copular_reversal(clause: Clause) -> str | None:
    """ "Warsaw is the capital of Poland." -> "The capital of Poland is Warsaw." (definite attributes only)."""
    attrs = [a for a in clause.args if a.dep == "attr"]
    if not clause.copula or not attrs or len(clause.args) != 1:
        return None
    attr = attrs[0]
    if attr.tokens[0].lower_ != "the":
        return None
    text = _text(attr.tokens)
    return f"{text[:1].upper()}{text[1:]} {clause.verb.text} {_lower_first(clause.subj.tokens)}."


def _appositives(sent) -> list[tuple[str, str, str]]:
    out = []
    for tok in sent:
        comma = tok.left_edge.i > 0 and sent.doc[tok.left_edge.i - 1].text in (",", "(")
        if tok.dep_ == "appos" and tok.head.pos_ == "PROPN" and tok.pos_ == "NOUN" and comma:
            name_tokens = [t for t in tok.head.subtree if t.i < tok.left_edge.i and (t.dep_ != "punct" or glued(t))]
            name = _lower_first(name_tokens) if name_tokens else ""
            desc = _text(_trim(tok))  # "an infamous prison now occupied by ..." -> "an infamous prison"
            if name and desc and 2 < len(desc.split()) <= 10:  # "a form" alone describes nothing
                wh = "who" if _ent(tok.head) == "PERSON" else "what"
                out.append((_finish([wh, "is", name]), desc, f"{name[:1].upper()}{name[1:]} is {desc}."))
    return out


def _good(question: str, answer: str, max_answer_words: int) -> bool:
    words = re.findall(r"[\w'’-]+", question.lower())
    if len(words) < 3 or not answer or len(answer.split()) > max_answer_words:
        return False
    if any(w in _PERSON_PRONOUNS for w in words[1:]) or answer.lower() in _PERSON_PRONOUNS:
        return False
    for opening, closing in ("()", "[]"):
        if question.count(opening) != question.count(closing) or answer.count(opening) != answer.count(closing):
            return False
    if question.count('"') % 2 or answer.count('"') % 2:
        return False
    return f" {answer.lower()} " not in f" {' '.join(words)} "


def sentence_questions(sent, wordings: int = 3, max_answer_words: int = 12) -> tuple[list[Question], list[str]]:
    """Every question this sentence answers (up to `wordings` per answer), and its restatements (`reversed`)."""
    questions: list[Question] = []
    statements: list[str] = []

    def add(items: list[tuple[str, str | None]], answer_tokens, span: str):
        answer = _text(answer_tokens) if not isinstance(answer_tokens, str) else answer_tokens
        seen = set()
        for form, q in items:
            if q and q not in seen and len(seen) < wordings and _good(q, answer, max_answer_words):
                seen.add(q)
                questions.append(Question(q, answer, form, span))

    for clause in clauses(sent):
        subj_wh = _plain_wh(clause.subj.head)
        attrs = [a for a in clause.args if a.dep == "attr"]
        if clause.copula and attrs and not _identifying(attrs[0]):
            subj_wh = None  # "What is $18.5 million?", "What is a band?" ask nothing: the attribute must identify
        if subj_wh and subj_wh != "when":
            subj_wh = "what" if subj_wh.startswith(("what percentage", "how")) else subj_wh
            items = [("subject", _ask_subject(clause, subj_wh)), ("short", _ask_subject(clause, subj_wh, True))]
            # a relative clause's subject answers with the noun phrase alone, not the clause being asked about
            answer = list(clause.subj.tokens) if clause.verb.dep_ == "relcl" else _trim(clause.subj.head)
            add(items, answer, clause.subj.head.ent_type_ or clause.subj.dep)
        settings = [a for a in clause.args if a.dep == "prep" and a.start < clause.subj.start]
        for arg in clause.args:
            asked = _object_wh(arg, clause.args)
            if asked is None:
                continue
            wh, answer, strand = asked
            if strand is not None and arg.start < clause.verb.i:
                continue  # a stranded preposition has no place in front of the verb
            items = [("fronted", _ask(clause, wh, arg, strand=strand))]
            items.append(("short", _ask(clause, wh, arg, core_only=True, strand=strand)))
            for setting in (s for s in settings if s is not arg):
                items.append(("context", _ask(clause, wh, arg, strand=strand, front=setting)))
            span = (answer[0].ent_type_ if answer else "") or arg.dep
            add(items, answer, span)
        if cause := _cause(clause):
            arg, answer, kind = cause
            items = [(kind, _ask(clause, "why", arg)), (kind, _ask(clause, "why", arg, core_only=True))]
            if kind == "purpose":
                items.append((kind, _ask(clause, "for what purpose", arg)))
            add(items, answer, kind)
        for form, q, answer, span, statement in _turned(clause):
            if form == "reversed":
                statements.append(statement)
            else:
                add([(form, q)], answer, span)
        if reversal := _copular_reversal(clause):
            statements.append(reversal)
    for q, desc, statement in _appositives(sent):
        add([("appositive", q)], desc, "appos")
        statements.append(statement)
    asked = [q.answer.lower() for q in questions]
    for ent in sent.ents:
        name = ent.text.lower()
        if any(name in a and len(a.split()) <= len(name.split()) + 1 for a in asked):
            continue  # asked already, alone or with its unit ("5,000 euros")
        if ent.root.dep_ in ("compound", "amod", "nmod", "poss", "conj"):
            continue  # a modifier ("the Rotterdam office") or half a coordination, not a phrase of its own
        if q := _echo(sent, ent):
            add([("echo", q)], ent.text, ent.label_)
    return questions, statements


_ECHO_WH = {"PERSON": "who", "MONEY": "how much", "PERCENT": "what percentage", "TIME": "what time"}


def _echo(sent, ent) -> str | None:
    """An entity nested inside a longer phrase ("in memory of the largest insurrection of World War II"), asked in
    place: the sentence with the entity replaced by its question word. Not fronted, but every entity is asked."""
    if ent.label_ == "ORDINAL" or ent.start == sent.start:
        return None  # a sentence-initial entity is its clause's subject, asked already when it is one
    before, after = sent.doc[sent.start : ent.start], sent.doc[ent.end : sent.end]
    prep = before[-1].lower_ if len(before) else ""
    wh = _ECHO_WH.get(ent.label_, "what")
    if ent.label_ == "DATE":
        wh = "when" if prep in _WHEN_PREPS else f"{prep} when" if prep in _WHEN_KEEP else None
        before = before[:-1] if wh else before
    elif ent.label_ in _PLACE and prep in ("in", "at", "near", "within"):
        wh, before = "where", before[:-1]
    elif ent.label_ in ("CARDINAL", "QUANTITY") and len(after) and after[0].tag_ == "NNS" and ent.end - ent.start == 1:
        wh, after = f"how many {after[0].text}", after[1:]
    if wh is None or (len(after) and after[0].tag_ == "POS"):
        return None  # "Priya Raman's team": no clean question word for a possessive
    return _finish([_lower_first(before) if len(before) else "", wh, _text(after)])
