"""Which collection each system of an eval run reads: a tenant's scorecard holds its own collection's evidence only.

A module's systems (`module`, `module+rag`) read the collection the module was trained on (its manifest's
`collection`): its retriever gives their evidence and support, and its calibration their confidence. The
systems without a module (`base`, `icl`, `rag`) read the run's collection: `--collection` when given, else the
one collection all the run's modules share, else `default`. Modules of different collections in one run, with no
`--collection` to say which corpus the base systems answer from, are refused: the run would otherwise have to
pick one collection's documents for questions about another's. Generated questions (`--generate-questions`)
come from the run's collection too, so no other collection's text is sent to a generator.
"""

from __future__ import annotations

from imprint.errors import ImprintError
from imprint.workspace.db import DEFAULT_COLLECTION, safe_name


def module_collections(ws, modules: list[str]) -> dict[str, str]:
    """{`name@version`: the collection it was trained on} of the run's modules, in order."""
    out = {}
    for spec in modules:
        entry = ws.module(spec)
        out[f"{entry.name}@{entry.version}"] = entry.collection
    return out


def run_collection(ws, owned: dict[str, str], collection: str | None = None) -> str:
    """The collection base, icl and rag read (and generated questions come from); see the module docstring."""
    if collection is not None:
        safe_name(collection, "collection")
        if not ws.has_collection(collection):
            names = ", ".join(n for n, count in ws.collections().items() if count) or "none yet"
            raise ImprintError(f"collection {collection!r} has no documents (collections: {names})")
        return collection
    found = sorted(set(owned.values()))
    if len(found) > 1:
        which = ", ".join(f"{label} ({c})" for label, c in owned.items())
        raise ImprintError(
            f"the modules come from different collections ({which}): eval one collection's modules at a time, or "
            "name the collection the base systems read with --collection"
        )
    return found[0] if found else DEFAULT_COLLECTION
