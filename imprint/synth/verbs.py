"""English verb forms the question writer needs: past tense, past participle, third person singular.

A small table of the common irregular verbs and the regular spelling rules; spaCy gives the lemma and tag, and
nothing in its small pipeline inflects. A form that cannot be derived safely is None, and the question that
needed it is not written.
"""

from __future__ import annotations

import re

# Past tense and past participle of the common irregular verbs (a regular verb has "-ed" for both).
IRREGULAR = {
    "be": ("was", "been"), "begin": ("began", "begun"), "bring": ("brought", "brought"),
    "build": ("built", "built"), "buy": ("bought", "bought"), "catch": ("caught", "caught"),
    "choose": ("chose", "chosen"), "come": ("came", "come"), "cut": ("cut", "cut"), "do": ("did", "done"),
    "draw": ("drew", "drawn"), "drive": ("drove", "driven"), "eat": ("ate", "eaten"), "fall": ("fell", "fallen"),
    "find": ("found", "found"), "fight": ("fought", "fought"), "forget": ("forgot", "forgotten"),
    "freeze": ("froze", "frozen"), "get": ("got", "gotten"), "give": ("gave", "given"), "grow": ("grew", "grown"),
    "have": ("had", "had"), "hold": ("held", "held"), "hide": ("hid", "hidden"), "keep": ("kept", "kept"),
    "know": ("knew", "known"), "lay": ("laid", "laid"), "lead": ("led", "led"), "leave": ("left", "left"),
    "lend": ("lent", "lent"), "lose": ("lost", "lost"), "make": ("made", "made"), "mean": ("meant", "meant"),
    "meet": ("met", "met"), "pay": ("paid", "paid"), "put": ("put", "put"), "read": ("read", "read"),
    "ride": ("rode", "ridden"), "ring": ("rang", "rung"), "rise": ("rose", "risen"), "run": ("ran", "run"),
    "say": ("said", "said"), "see": ("saw", "seen"), "sell": ("sold", "sold"), "send": ("sent", "sent"),
    "set": ("set", "set"), "shake": ("shook", "shaken"), "shoot": ("shot", "shot"), "show": ("showed", "shown"),
    "sing": ("sang", "sung"), "speak": ("spoke", "spoken"), "spend": ("spent", "spent"),
    "stand": ("stood", "stood"), "steal": ("stole", "stolen"), "strike": ("struck", "struck"),
    "take": ("took", "taken"), "teach": ("taught", "taught"), "tear": ("tore", "torn"), "tell": ("told", "told"),
    "think": ("thought", "thought"), "throw": ("threw", "thrown"), "understand": ("understood", "understood"),
    "wear": ("wore", "worn"), "win": ("won", "won"), "write": ("wrote", "written"), "feed": ("fed", "fed"),
    "bear": ("bore", "borne"), "beat": ("beat", "beaten"), "bind": ("bound", "bound"), "bite": ("bit", "bitten"),
    "blow": ("blew", "blown"), "break": ("broke", "broken"), "deal": ("dealt", "dealt"), "dig": ("dug", "dug"),
    "fly": ("flew", "flown"), "forbid": ("forbade", "forbidden"), "go": ("went", "gone"), "hang": ("hung", "hung"),
    "hear": ("heard", "heard"), "let": ("let", "let"), "light": ("lit", "lit"), "seek": ("sought", "sought"),
    "shut": ("shut", "shut"), "sink": ("sank", "sunk"), "slay": ("slew", "slain"), "spread": ("spread", "spread"),
    "swear": ("swore", "sworn"), "swim": ("swam", "swum"), "wake": ("woke", "woken"), "weave": ("wove", "woven"),
    "withdraw": ("withdrew", "withdrawn"), "overtake": ("overtook", "overtaken"),
    "undertake": ("undertook", "undertaken"),
}  # fmt: skip


def third_person(verb) -> str:
    """The verb agreeing with a singular question word: "receive" -> "receives", "have" -> "has"."""
    lemma = verb.lemma_.lower()
    if lemma in ("be", "have", "do"):
        return {"be": "is", "have": "has", "do": "does"}[lemma]
    if re.search(r"(s|sh|ch|x|z|o)$", lemma):
        return lemma + "es"
    return lemma[:-1] + "ies" if re.search(r"[^aeiou]y$", lemma) else lemma + "s"


_PREFIXES = ("over", "under", "with", "out", "up", "mis", "fore", "re", "be")
_REGULAR = {"relay", "underlay"}  # a prefix + irregular look-alike that inflects regularly


def _irregular(lemma: str) -> tuple[str, str] | None:
    """An irregular verb's forms, also behind a prefix: oversee -> oversaw / overseen, withhold -> withheld."""
    if lemma in IRREGULAR:
        return IRREGULAR[lemma]
    if lemma in _REGULAR:
        return None
    for prefix in _PREFIXES:
        base = lemma[len(prefix) :]
        if lemma.startswith(prefix) and len(base) > 1 and base in IRREGULAR:
            return prefix + IRREGULAR[base][0], prefix + IRREGULAR[base][1]
    return None


def participle(verb) -> str | None:
    if verb.tag_ in ("VBN", "VBD") and verb.lower_.endswith("ed"):
        return verb.lower_
    if verb.tag_ == "VBN":
        return verb.text
    lemma = verb.lemma_.lower()
    if forms := _irregular(lemma):
        return forms[1]
    if verb.tag_ == "VBD" and verb.lower_.endswith("ed"):
        return verb.lower_
    if verb.tag_ in ("VBZ", "VBP") and re.fullmatch(r"[a-z]+", lemma):
        if lemma.endswith("e"):
            return lemma + "d"
        if re.search(r"[^aeiou]y$", lemma):
            return lemma[:-1] + "ied"
        if not re.search(r"[aeiou][^aeiouwxy]$", lemma):
            return lemma + "ed"
    return None


def past(verb) -> str | None:
    lemma = verb.lemma_.lower()
    if forms := _irregular(lemma):
        return forms[0]
    return verb.text if verb.text.endswith("ed") else None
