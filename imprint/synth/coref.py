"""Pronouns and definite references resolved to their antecedents, so no question or restatement is orphaned.

A question cut from "She joined in 2011." ("When did she join?") teaches nothing: the model never learns who
"she" is. Before any question is made, each sentence of a document is rewritten with its references spelled out:

- personal pronouns (he, she, him, his, her) -> the person named or referred to in this sentence or one of the
  two before it (a PERSON entity, or a proper name the tagger did not type that reads as a personal name), whose
  pronouns so far agree in gender; a new proper-noun subject in between ends the reference (the small tagger
  misses or mislabels names, and a pronoun given to the wrong person teaches a wrong fact);
- it, its -> the subject of the same clause when a possessive refers back to it ("The company moved its
  workshop"), else the last non-person subject noun phrase;
- they, them, their -> the last plural subject noun phrase, unless a singular quantified subject makes it a
  generic "their" ("Every employee meets their manager");
- a bare definite noun phrase ("the band") -> the proper name an earlier sentence defined it as
  ("Galactica is a Canadian indie rock band", "Galactica, a Canadian indie rock band, ...").

Heuristics over a dependency parse (spaCy), not a trained coreference model: they resolve the common cases of
encyclopedic and business prose, and leave a pronoun alone when no antecedent qualifies (the question filter then
drops anything still holding one). A pronoun left alone loses a question; one resolved wrongly trains a false
fact, so where the two trade off these rules leave it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PERSONAL = {"he", "she", "him", "his", "her", "hers", "himself", "herself"}
_NEUTER = {"it", "its"}
_PLURAL = {"they", "them", "their"}
_POSSESSIVE = {"his", "her", "its", "their"}
_SUBJECT = ("nsubj", "nsubjpass")
_MALE = {"he", "him", "his", "himself"}
_QUANTIFIERS = {"no", "every", "each", "any", "all", "some", "another", "either", "neither"}
_BINDING = {"every", "each", "no", "any"}  # a subject with one of these binds a pronoun under it ("their", "its")
_MAX_GAP = 2  # sentences between an antecedent's last mention and a pronoun that falls back on it
_GLUE = {"-", "–", "/", "'", "’", "&", "+"}


@dataclass
class _State:
    person: str | None = None
    thing: str | None = None
    plural: str | None = None
    nominals: dict[str, str] = field(default_factory=dict)  # head-noun lemma -> proper name it describes
    sentence: int = 0  # index of the sentence being resolved
    seen: dict[str, int] = field(default_factory=dict)  # "person" / "thing" / "plural" -> sentence last mentioned
    gender: dict[str, str] = field(default_factory=dict)  # person phrase -> "m" / "f", from pronouns resolved to it


def glued(token) -> bool:
    """Punctuation inside a word or name ("Kettering-Mbeki", "O'Neill", "24/7"): no space on either side."""
    doc = token.doc
    return (
        token.text in _GLUE
        and 0 < token.i < len(doc) - 1
        and not token.whitespace_
        and not doc[token.i - 1].whitespace_
    )


def _aside(token) -> bool:
    """A prepositional modifier of a name that is not part of it: "Ethiopia, with its artifacts," (but "Bank of
    America" keeps "of America")."""
    return token.dep_ == "prep" and not any(c.dep_ == "pobj" and c.pos_ == "PROPN" for c in token.children)


def _phrase(token, max_words: int = 8) -> str:
    """The noun phrase a token heads, without relative clauses, appositions or punctuation; its prepositional
    modifiers ("the head of sales") are kept unless the phrase grows past `max_words`."""
    base = {"relcl", "acl", "appos", "punct", "cc", "conj"}
    if token.pos_ == "PROPN":  # a name stands alone: "Springfield, renowned for ..." -> "Springfield"
        base |= {"amod", "advcl", "npadvmod", "advmod"}
    for cut in (base, base | {"prep"}):
        words = [
            t
            for t in token.subtree
            if not any(a.dep_ in cut and not (a.dep_ == "punct" and glued(a)) for a in path_to(t, token))
            and not (token.pos_ == "PROPN" and any(_aside(a) for a in path_to(t, token)))
        ]
        text = "".join(
            t.text_with_ws if t.whitespace_ or k + 1 == len(words) or words[k + 1].i == t.i + 1 else t.text + " "
            for k, t in enumerate(words)
        )  # a word whose comma was cut keeps its space
        text = text.strip().strip(",;: ")
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


def _name_like(token) -> bool:
    """A proper noun the tagger left untyped that reads as a personal name: two to four capitalised words
    ("Dame Philippa Orrinshaw", "Priyanka Delacourt-Ames"), no digits."""
    if token.pos_ != "PROPN" or token.ent_type_ not in ("", "PERSON"):
        return False
    words = [t for t in token.subtree if t.i <= token.i and t.dep_ in ("compound", "flat") or t == token]
    return 2 <= len(words) <= 4 and all(w.text[:1].isupper() and w.is_alpha for w in words)


def _coordinated(token) -> bool:
    """ "a laptop, phone or security key": one conjunct of several, so "it" after it means none of them alone."""
    return any(t.dep_ == "conj" and t.pos_ == "NOUN" and t.head.pos_ == "NOUN" for t in token.subtree)


def _quantified(token) -> bool:
    """ "no manager", "every employee": a phrase that names no one thing a later pronoun could mean."""
    return any(c.dep_ == "det" and c.lower_ in _QUANTIFIERS for c in token.children)


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
        return antecedent.ent_type_ == "PERSON" or _name_like(antecedent)
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


def _earlier_subjects(tok):
    """Subjects of the same sentence's other clauses that come before a token, nearest first ("When a team grows
    beyond nine people, it is split": "a team")."""
    return [
        t
        for t in reversed(list(tok.sent))
        if t.i < tok.i and t.dep_ in _SUBJECT and t.pos_ != "PRON" and tok not in t.subtree
    ]  # not a phrase that holds the pronoun itself ("Springfield, renowned for its ...")


def _holder(tok):
    """The noun whose modifier holds a possessive pronoun: "Springfield, renowned for its fans, ..." ->
    Springfield (the noun the pronoun itself possesses is not it)."""
    if tok.dep_ != "poss":
        return None
    node = tok.head
    while node.head != node:
        node = node.head
        if node.pos_ in ("NOUN", "PROPN") and _compatible(tok, node):
            return node
        if node.pos_ in ("VERB", "AUX") and node.dep_ not in ("acl", "amod", "relcl"):
            return None  # up to a clause: its subject is what _subjects_above finds
    return None


def _fallback(tok, state: _State) -> str | None:
    low = tok.lower_
    slot = "person" if low in _PERSONAL else "plural" if low in _PLURAL else "thing"
    if state.sentence - state.seen.get(slot, -_MAX_GAP - 1) > _MAX_GAP:
        return None  # named too far back to be sure
    return getattr(state, slot)


def _gender(pronoun) -> str | None:
    low = pronoun.lower_
    return "m" if low in _MALE else "f" if low in _PERSONAL else None


def _bound(tok) -> bool:
    """A pronoun bound by a quantified subject, which names no one thing to put in its place: "Every employee meets
    their manager", "Every report should state its uncertainty", "A driver must renew their licence"."""
    subject = next(iter(_subjects_above(tok)), None)
    if subject is None:
        return False
    dets = {c.lower_ for c in subject.children if c.dep_ == "det"}
    return bool(dets & _BINDING) or (tok.lower_ in _PLURAL and subject.tag_ == "NN" and bool(dets & {"a", "an"}))


def _own_subject(tok):
    """The subject of the clause whose object a pronoun is: "the employee must report it" cannot mean the
    employee (a reflexive would say so); a relative pronoun subject is left alone ("..., which makes it ...")."""
    if tok.dep_ not in ("dobj", "dative", "pobj"):
        return None
    verb = tok.head.head if tok.dep_ == "pobj" else tok.head
    subj = [c for c in verb.children if c.dep_ in _SUBJECT]
    return subj[0] if subj and subj[0].tag_ not in ("WDT", "WP") else None


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
        if _bound(tok):
            continue
        own = _own_subject(tok)
        candidates = [_holder(tok), *_subjects_above(tok), *_earlier_subjects(tok)]
        subject = next((s for s in candidates if s is not None and s != own and _compatible(tok, s)), None)
        if subject is not None and (_quantified(subject) or (low not in _PLURAL and _coordinated(subject))):
            continue  # the nearest fitting phrase is "no manager" or "a laptop, phone or key": no one thing to name
        target = (names.get(subject.i) or _phrase(subject)) if subject is not None else _fallback(tok, state)
        if target and subject is not None and tok in subject.subtree and low in target.lower().split():
            continue  # "The title, on its own, ...": the only phrase on offer holds the pronoun itself
        gender = _gender(tok)
        if target and gender:
            if state.gender.setdefault(target, gender) != gender:
                continue  # "she" for a person so far called "he": not this person, and no one else to give it to
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
        person_object = tok.dep_ in ("dobj", "pobj", "appos", "attr") and (_is_person(tok) or _name_like(tok))
        if tok.dep_ not in _SUBJECT and not person_object:
            continue
        if tok.dep_ in _SUBJECT and tok.head.dep_ not in ("ROOT", "conj"):
            continue  # a subordinate clause's subject is not what the next sentence goes on about
        phrase = names.get(tok.i) or (None if tok.pos_ == "PRON" else _phrase(tok))
        if phrase is None or _quantified(tok):
            continue
        slot = None
        if _is_person(tok) or _name_like(tok):
            slot, state.person = "person", phrase
        elif tok.dep_ in _SUBJECT and tok.tag_ == "NNS":
            slot, state.plural = "plural", phrase
        elif tok.dep_ in _SUBJECT and tok.pos_ in ("NOUN", "PROPN"):
            slot, state.thing = "thing", phrase  # a proper name is one thing even when plural in form ("Acme Systems")
            if tok.pos_ == "PROPN" and phrase != state.person:
                state.person = None  # a new name the tagger calls no person: "he" after it is not the last person
        if slot:
            state.seen[slot] = state.sentence
    state.sentence += 1
    return "".join(pieces).strip()


def resolve_references(nlp, sentences: list[str], persons: set[str] | None = None) -> list[str]:
    """A document's sentences (in order) with pronouns and definite references replaced by their antecedents.
    `persons`, when given, gathers the document's personal names: those tagged PERSON somewhere, and those a
    "he" or "she" was resolved to (see `tag_persons`)."""
    state = _State()
    out = []
    for doc in nlp.pipe(sentences):
        out.append(resolve_doc(doc, state))
        if persons is not None:
            persons.update(e.text for e in doc.ents if e.label_ == "PERSON" and _full_name(e.text))
    if persons is not None:
        persons.update(name for name in state.gender if _full_name(name))
    return out


def _full_name(text: str) -> bool:
    words = text.replace("-", " ").split()
    return 2 <= len(words) <= 5 and all(w[:1].isupper() and w.replace("'", "").isalpha() for w in words)


def tag_persons(doc, persons: set[str]):
    """One sense per document: a full name tagged PERSON in one sentence, or called "he" or "she", is a PERSON in
    every sentence of the document (the small tagger calls "Ines Vathanakul" PERSON in one sentence and ORG in the
    next), so its questions ask "who" rather than "what". Returns the doc."""
    spans = []
    for name in persons:
        start = doc.text.find(name)
        while start >= 0:
            span = doc.char_span(start, start + len(name))
            if span is not None and not (span.end < len(doc) and doc[span.end].pos_ == "PROPN"):
                spans.append(span)
            start = doc.text.find(name, start + 1)
    if not spans:
        return doc
    spans = [s for s in spans if not any(o is not s and o.start <= s.start and s.end <= o.end for o in spans)]
    taken = {i for s in spans for i in range(s.start, s.end)}
    kept = [e for e in doc.ents if not any(i in taken for i in range(e.start, e.end))]
    doc.ents = sorted(kept + [doc.char_span(s.start_char, s.end_char, label="PERSON") for s in spans],
                      key=lambda e: e.start)  # fmt: skip
    return doc
