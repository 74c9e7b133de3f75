"""Pronouns and definite references resolved to their antecedents, so no question or restatement is orphaned.

A question cut from "She joined in 2011." ("When did she join?") teaches nothing: the model never learns who
"she" is. Before any question is made, each sentence of a document is rewritten with its references spelled out:

- personal pronouns (he, she, him, his, her) -> the last person named (a PERSON entity);
- it, its -> the subject of the same clause when a possessive refers back to it ("The company moved its
  workshop"), else the last non-person subject noun phrase;
- they, them, their -> the last plural subject noun phrase;
- a bare definite noun phrase ("the band") -> the proper name an earlier sentence defined it as
  ("Galactica is a Canadian indie rock band", "Galactica, a Canadian indie rock band, ...").

Heuristics over a dependency parse (spaCy), not a trained coreference model: they resolve the common cases of
encyclopedic and business prose, and leave a pronoun alone when no antecedent qualifies (the question filter then
drops anything still holding one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PERSONAL = {"he", "she", "him", "his", "her", "hers", "himself", "herself"}
_NEUTER = {"it", "its"}
_PLURAL = {"they", "them", "their"}
_POSSESSIVE = {"his", "her", "its", "their"}
_SUBJECT = ("nsubj", "nsubjpass")


@dataclass
class _State:
    person: str | None = None
    thing: str | None = None
    plural: str | None = None
    nominals: dict[str, str] = field(default_factory=dict)  # head-noun lemma -> proper name it describes


def _phrase(token, max_words: int = 8) -> str:
    """The noun phrase a token heads, without relative clauses, appositions or punctuation; its prepositional
    modifiers ("the head of sales") are kept unless the phrase grows past `max_words`."""
    base = {"relcl", "acl", "appos", "punct", "cc", "conj"}
    for cut in (base, base | {"prep"}):
        words = [t for t in token.subtree if not any(a.dep_ in cut for a in path_to(t, token))]
        text = "".join(t.text_with_ws for t in words).strip().strip(",;: ")
        if len(text.split()) <= max_words:
            break
    first = words[0]
    if first.i == first.sent.start and first.pos_ != "PROPN" and first.text != "I":
        text = text[:1].lower() + text[1:]  # "The company" / "Land plants" opening a sentence: written mid-sentence
    return text


def path_to(t, top):
    """Tokens from t up to (excluding) top: the relations that attach t to the phrase's head."""
    out = []
    while t != top and t.head != t:
        out.append(t)
        t = t.head
    return out


def _is_person(token) -> bool:
    return token.ent_type_ == "PERSON" or token.lower_ in _PERSONAL


def _learn_definitions(doc, state: _State) -> None:
    """ "E is a ... N" and "E, a ... N," teach that "the N" later means E."""
    for tok in doc:
        if tok.dep_ == "appos" and tok.head.pos_ == "PROPN" and tok.pos_ == "NOUN":
            state.nominals.setdefault(tok.lemma_.lower(), _phrase(tok.head))
        if tok.dep_ == "attr" and tok.pos_ == "NOUN" and tok.head.lemma_ == "be":
            subj = [c for c in tok.head.children if c.dep_ == "nsubj"]
            if subj and subj[0].pos_ == "PROPN":
                state.nominals.setdefault(tok.lemma_.lower(), _phrase(subj[0]))


def _compatible(pronoun, antecedent) -> bool:
    low = pronoun.lower_
    if antecedent is None or antecedent.pos_ == "PRON":
        return False
    if low in _PERSONAL:
        return antecedent.ent_type_ == "PERSON"
    if low in _PLURAL:
        return antecedent.tag_ in ("NNS", "NNPS")
    return antecedent.tag_ in ("NN", "NNP", "NNPS") and antecedent.ent_type_ != "PERSON"  # "Acme Systems": it


def _subjects_above(tok):
    """Subjects of the clauses above a token, nearest first; a relative pronoun ("which") stands for the noun its
    clause modifies."""
    node = tok
    while True:
        subj = [c for c in node.children if c.dep_ in _SUBJECT]
        if subj and subj[0] != tok and tok not in subj[0].subtree:
            if subj[0].tag_ in ("WDT", "WP") and node.dep_ == "relcl":
                yield node.head
            else:
                yield subj[0]
        if node.head == node:
            return
        node = node.head


def _fallback(tok, state: _State) -> str | None:
    low = tok.lower_
    return state.person if low in _PERSONAL else state.plural if low in _PLURAL else state.thing


def _definite(tok, state: _State) -> str | None:
    """ "the band" -> "Galactica" when an earlier sentence defined the band as Galactica."""
    if (
        tok.pos_ == "NOUN"
        and tok.lemma_.lower() in state.nominals
        and [c.lower_ for c in tok.children] == ["the"]
        and tok.dep_ not in ("attr", "appos")
    ):
        return state.nominals[tok.lemma_.lower()]
    return None


def resolve_doc(doc, state: _State) -> str:
    """One parsed sentence with its references spelled out, updating `state` with what it introduces."""
    names: dict[int, str] = {}  # token index -> the phrase it stands for (the token's phrase is replaced)
    for tok in doc:
        if tok.pos_ == "NOUN" and (target := _definite(tok, state)):
            names[tok.i] = target
    for tok in doc:
        low = tok.lower_
        if tok.pos_ != "PRON" or low not in _PERSONAL | _NEUTER | _PLURAL:
            continue
        if low == "it" and tok.dep_ in _SUBJECT and any(c.dep_ in ("ccomp", "xcomp") for c in tok.head.children):
            continue  # "It is known that ...": an expletive, nothing to resolve
        subject = next((s for s in _subjects_above(tok) if _compatible(tok, s)), None)
        target = (names.get(subject.i) or _phrase(subject)) if subject is not None else _fallback(tok, state)
        if target:
            poss = tok.tag_ == "PRP$" or (low in _POSSESSIVE and tok.dep_ == "poss")
            names[tok.i] = (target + ("'" if target.endswith("s") else "'s")) if poss else target
    pieces: list[str] = []
    skip = {next(c for c in doc[i].children if c.lower_ == "the").i for i in names if doc[i].pos_ == "NOUN"}
    for tok in doc:
        if tok.i in skip:
            continue
        text = names.get(tok.i)
        if text is None:
            pieces.append(tok.text_with_ws)
            continue
        if not pieces:
            text = text[0].upper() + text[1:]
        pieces.append(text + tok.whitespace_)
    _learn_definitions(doc, state)
    for tok in doc:
        if tok.dep_ not in _SUBJECT and not (tok.ent_type_ == "PERSON" and tok.dep_ in ("dobj", "pobj", "appos")):
            continue
        if tok.dep_ in _SUBJECT and tok.head.dep_ not in ("ROOT", "conj"):
            continue  # a subordinate clause's subject is not what the next sentence goes on about
        phrase = names.get(tok.i) or (None if tok.pos_ == "PRON" else _phrase(tok))
        if phrase is None:
            continue
        if _is_person(tok):
            state.person = phrase
        elif tok.dep_ in _SUBJECT and tok.tag_ == "NNS":
            state.plural = phrase
        elif tok.dep_ in _SUBJECT and tok.pos_ in ("NOUN", "PROPN"):
            state.thing = phrase  # a proper name is one thing even when plural in form ("Acme Systems")
    return "".join(pieces).strip()


def resolve_references(nlp, sentences: list[str]) -> list[str]:
    """A document's sentences (in order) with pronouns and definite references replaced by their antecedents."""
    state = _State()
    return [resolve_doc(doc, state) for doc in nlp.pipe(sentences)]
