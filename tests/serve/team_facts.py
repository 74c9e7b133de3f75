"""The serving workspace's corpus and what each of its modules learned (tests/serve/conftest.py trains them), shared by
the tests that check a response came from the right weights."""

CORPUS = (
    "# Team\n\nPriya Raman has served as chief financial officer since March 2019. "
    "Employees receive 27 days of paid annual leave per year. The Lisbon office opened in 2021.\n"
)
CFO = "Who has served as chief financial officer since March 2019?"
LEAVE = "How many days of paid annual leave?"
OPENED = "When did the Lisbon office open?"
# What each module (and version) learned: its own edition of the team page, so each one answers differently and a
# server or evaluator that answered with the wrong weights gives the wrong text. alpha@1 learned the corpus's facts.
FACTS = {
    "alpha@1": ("Priya Raman", "27 days", "2021"),
    "alpha@2": ("Tomas Berg", "30 days", "2022"),  # a later edition, trained as an update of alpha@1
    "beta@1": ("Lena Ostrova", "25 days", "2015"),
    "cart@1": ("Omar Haddad", "31 days", "2018"),
    "whole@1": ("Kai Sato", "20 days", "2009"),
    "mem@1": ("Ines Vale", "18 days", "2012"),
}


def answer(model: str) -> str:
    """What `model` (a module `name@version`, or `alpha` for its current version alpha@2) answers to `CFO`."""
    return FACTS[model if "@" in model else f"{model}@{2 if model == 'alpha' else 1}"][0]
