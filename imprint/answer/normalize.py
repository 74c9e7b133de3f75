"""Answer normalisation, SQuAD-style: lower case, no punctuation, no articles, single spaces. Answering uses it
to check an answer against its evidence (support); `imprint.evaluate.metrics` scores answers with it.
"""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())
