"""An update's three rates on a change set: adopted, retired, retained; and what it cost against a retrain.

A change set is an eval set whose items say how the corpus changed between two editions (`change`: added,
changed, removed, unchanged; `old_answers` for changed and removed facts, see `evalset.py`). For every system:

- **adopted**: questions about added or changed facts answered with the new value;
- **retired**: questions about changed or removed facts whose old value is no longer given (an abstention, or any
  answer without the old value, retires it);
- **retained**: questions about unchanged facts still answered right;
- for removed documents, the share still answered with the old value: compare it with the base model's (the level
  a deletion should return to) and the share abstained on.

A value "is given" when an accepted answer appears in the output as whole words (`answer_contained`): a short
answer such as "29 days" gives "29", and "29 days (previously 27)" gives both the new and the old value.

Rates are absolute (over all items of the kind) and, for a module version made by `imprint update` whose previous
version is in the same run, also relative to it: retained of what the previous version answered right, retired
of what it answered with the old value ("retained >= 95% of what v1 knew"). An update and a from-scratch retrain
of the same previous version, both in the run, are compared by training wall time and tokens.
"""

from __future__ import annotations

from imprint.evaluate.evalset import EvalItem
from imprint.evaluate.metrics import answer_contained, mean

ADOPT, RETIRE = ("added", "changed"), ("changed", "removed")


def _r(value):
    return None if value is None else round(value, 4)


def annotate(rows: list[dict], items: list[EvalItem]) -> None:
    """Add each change-set row's kind and whether its new (`new_given`) and old (`old_given`) values were given."""
    by_id = {i.id: i for i in items}
    for row in rows:
        item = by_id.get(row["id"])
        if item is None or not item.change:
            continue
        row["change"] = item.change
        row["new_given"] = answer_contained(row["answer"], list(item.answers)) if item.answerable else None
        row["old_given"] = answer_contained(row["answer"], list(item.old_answers)) if item.old_answers else None


def _share(rows: list[dict], kinds: tuple[str, ...], key: str, want: float = 1.0):
    values = [float(r[key] == want) for r in rows if r.get("change") in kinds and r.get(key) is not None]
    return _r(mean(values)), len(values)


def rates(rows: list[dict]) -> dict:
    """Absolute rates over one system's annotated rows."""
    adopted, n_adopt = _share(rows, ADOPT, "new_given")
    retired, n_retire = _share(rows, RETIRE, "old_given", want=0.0)
    retained, n_retain = _share(rows, ("unchanged",), "new_given")
    removed = [r for r in rows if r.get("change") == "removed"]
    return {
        "adopted": adopted,
        "adopted_added": _share(rows, ("added",), "new_given")[0],
        "adopted_changed": _share(rows, ("changed",), "new_given")[0],
        "retired": retired,
        "retired_changed": _share(rows, ("changed",), "old_given", want=0.0)[0],
        "retired_removed": _share(rows, ("removed",), "old_given", want=0.0)[0],
        "retained": retained,
        "removed_old_given": _share(rows, ("removed",), "old_given")[0],
        "removed_abstained": _r(mean([float(r["abstained"]) for r in removed])),
        "n": {"adopt": n_adopt, "retire": n_retire, "retain": n_retain},
    }


def relative_rates(rows: list[dict], reference: list[dict]) -> dict:
    """Rates relative to a reference system (the previous version): retained of the unchanged facts it answered
    right, retired of the changed and removed facts it answered with the old value."""
    before = {r["id"]: r for r in reference}
    knew = [r for r in rows if r.get("change") == "unchanged" and before.get(r["id"], {}).get("new_given") == 1.0]
    told = [r for r in rows if r.get("change") in RETIRE and before.get(r["id"], {}).get("old_given") == 1.0]
    return {
        "retained_of_reference": _r(mean([r["new_given"] for r in knew])),
        "n_reference_knew": len(knew),
        "retired_of_reference": _r(mean([1.0 - r["old_given"] for r in told])),
        "n_reference_old": len(told),
    }


def _reference(system: dict, manifests: dict) -> str | None:
    """The system of the previous version this one replaces (same mode), from its manifest's `update` record."""
    manifest = manifests.get(system.get("module") or "")
    update = (manifest or {}).get("update")
    if not update or update.get("previous") is None:
        return None
    label = f"{manifest['name']}@{update['previous']}"
    return label if system["mode"] == "module" else f"{label}+rag"


def change_scorecard(items: list[EvalItem], systems: list[dict], manifests: dict) -> dict | None:
    """The change-set part of a scorecard, or None when no item is marked with a change. Annotates every system's
    rows and adds `changes` (its rates) to each system."""
    if not any(i.change for i in items):
        return None
    for system in systems:
        annotate(system["rows"], items)
    by_name = {s["system"]: s for s in systems}
    for system in systems:
        system["changes"] = rates(system["rows"])
        reference = _reference(system, manifests)
        if reference in by_name:
            system["changes"].update(reference=reference, **relative_rates(system["rows"], by_name[reference]["rows"]))
        kind = ((manifests.get(system.get("module") or "") or {}).get("update") or {}).get("mode")
        system["changes"]["kind"] = kind
    counts = {k: sum(i.change == k for i in items) for k in ("added", "changed", "removed", "unchanged")}
    return {
        "n": counts,
        "metric": "answer contained (whole words)",
        "systems": {s["system"]: s["changes"] for s in systems},
        "cost": update_cost(manifests),
    }


def update_cost(manifests: dict) -> list[dict]:
    """Each update next to a from-scratch retrain of the same previous version, when both are in the run."""
    out = []
    for label, manifest in manifests.items():
        update = manifest.get("update") or {}
        if update.get("mode") != "update":
            continue
        for other, theirs in manifests.items():
            if (
                (theirs.get("update") or {}).get("mode") == "from-scratch"
                and theirs["name"] == manifest["name"]
                and (theirs["update"].get("previous") == update.get("previous"))
            ):
                mine, ref = manifest.get("metrics", {}), theirs.get("metrics", {})
                out.append(
                    {
                        "update": label,
                        "from_scratch": other,
                        "update_wall_s": mine.get("wall_s"),
                        "from_scratch_wall_s": ref.get("wall_s"),
                        "wall_ratio": _ratio(mine.get("wall_s"), ref.get("wall_s")),
                        "update_tokens": mine.get("tokens"),
                        "from_scratch_tokens": ref.get("tokens"),
                        "tokens_ratio": _ratio(mine.get("tokens"), ref.get("tokens")),
                    }
                )
    return out


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None
