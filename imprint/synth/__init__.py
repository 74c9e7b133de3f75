"""Synthesis: from chunks to training records.

Offline strategies (`rules.py`, `raw.py`) derive records from the text alone. Generator strategies
(`paraphrase.py`, `qa.py`, `entigraph.py`, `active_reading.py`) plan prompts from templates (`prompting.py`,
`templates/`) and parse what a generator (`generators/`) writes; `engine.py` runs them within a token budget
(`budget.py`), resumably (`journal.py`), and keeps only records that pass the quality gates (`gates.py`).
Records and their on-disk form: `records.py`.
"""
