"""Synthesis: from chunks to training records.

Offline strategies derive records from the text alone: `prose.py` (the default: questions from a spaCy parse,
`parsing.py`, `coref.py`, `questions.py`), `rules.py` (regexes; prose's fallback without spaCy) and `raw.py`.
Generator strategies (`paraphrase.py`, `qa.py`, `entigraph.py`, `active_reading.py`) plan prompts from templates
(`prompting.py`, `templates/`) and parse what a generator (`generators/`) writes; `engine.py` runs them within a
token budget (`budget.py`), resumably (`journal.py`), and keeps only records that pass the quality gates
(`gates.py`). Records and their on-disk form: `records.py`.
"""
