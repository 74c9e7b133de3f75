"""The scorecard as a terminal table (rich): one row per system, learned | forgot | cost."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


RETENTION_LABELS = {"choice_accuracy_norm": "acc_norm", "token_f1": "F1"}


def plus_minus(value, se, digits: int = 3) -> str:
    """A value with its standard error, `0.312±0.027`."""
    return _f(value, digits) + ("" if se is None else f"±{_f(se, digits)}")


def retention_lines(forgot: dict) -> list[str]:
    """Each retention benchmark as `<set> <metric> value±se (Δ±se)`: multiple choice by length-normalised
    accuracy, open questions by token F1; the change's standard error is of paired per-item differences."""
    parts = []
    for source, b in forgot["benchmarks"].items():
        key = "choice_accuracy_norm" if "choice_accuracy_norm" in b else "token_f1"
        delta = b.get(f"{key}_delta")
        sign = "+" if (delta or 0) >= 0 else ""
        change = f" ({sign}{plus_minus(delta, b.get(f'{key}_delta_se'))})" if delta is not None else ""
        parts.append(f"{source} {RETENTION_LABELS[key]} {plus_minus(b.get(key), b.get(f'{key}_se'))}{change}")
    return parts


def _retention(forgot: dict) -> str:
    return "\n".join(retention_lines(forgot)) or "-"


def scorecard_table(card: dict) -> Table:
    table = Table(
        "system",
        "EM",
        "F1",
        "answer\ncontained",
        "choice",
        "abstain\nunansw.",
        "ECE",
        "top-1 agree\nwith base",
        "ΔNLL",
        "retention benchmarks\n(Δ vs base)",
        "train s",
        "module MB",
        "p50/p95 ms",
        "prompt\ntokens",
        title=f"learned | forgot | cost: {card['n_questions']} questions from {card['eval_set']}",
    )
    for s in card["systems"]:
        forgot, cost = s["forgot"], s["cost"]
        size = None if cost["module_bytes"] is None else cost["module_bytes"] / 1e6
        table.add_row(
            f"{s['system']} [dim]{s['mode']}[/dim]",
            _f(s["exact_match"]),
            _f(s["token_f1"]),
            _f(s.get("answer_contained")),
            _f(s["choice_accuracy_norm"]),
            _f(s["abstention_unanswerable"], 2),
            _f(s["ece"]),
            plus_minus(forgot["self"]["top1_agreement"], forgot["self"].get("top1_agreement_se")),
            plus_minus(forgot["self"]["nll_delta"], forgot["self"].get("nll_delta_se")),
            _retention(forgot),
            _f(cost["train_wall_s"], 0),
            _f(size, 1),
            f"{_f(cost['latency_ms_p50'], 0)}/{_f(cost['latency_ms_p95'], 0)}",
            _f(cost["prompt_tokens_mean"], 0),
        )
    return table


def probe_table(card: dict) -> Table | None:
    """Completion probes per kind (memorise / paraphrase / hard): EM, F1, answer contained for every system."""
    kinds = sorted({k for s in card["systems"] for k in s.get("by_probe", {})})
    if not kinds:
        return None
    table = Table("system", *(f"{k}\nn | EM | F1 | contained" for k in kinds), title="completion probes by kind")
    for s in card["systems"]:
        cells = []
        for kind in kinds:
            m = s.get("by_probe", {}).get(kind)
            cells.append(
                "-"
                if m is None
                else f"{m['n']} | {_f(m['exact_match'])} | {_f(m['token_f1'])} | {_f(m['answer_contained'])}"
            )
        table.add_row(s["system"], *cells)
    return table


def change_table(card: dict) -> Table | None:
    """A change set's rates per system: adopted (new and changed facts), retired (old values of changed and removed
    facts), retained (unchanged facts), each also relative to the previous version when it was scored too."""
    changes = card.get("changes")
    if not changes:
        return None
    n = changes["n"]
    table = Table(
        "system",
        "kind",
        f"adopted\nadded | changed\n({n['added']} | {n['changed']})",
        f"retired\nchanged | removed\n({n['changed']} | {n['removed']})",
        f"retained\n({n['unchanged']})",
        "of previous:\nretained | retired",
        "removed: old given\n| abstained",
        title=f"change set: {changes['metric']}",
    )
    for name, c in changes["systems"].items():
        relative = "-"
        if c.get("reference"):
            relative = (
                f"{_f(c['retained_of_reference'], 2)} ({c['n_reference_knew']}) | "
                f"{_f(c['retired_of_reference'], 2)} ({c['n_reference_old']})"
            )
        table.add_row(
            name,
            c.get("kind") or "-",
            f"{_f(c['adopted'], 2)}: {_f(c['adopted_added'], 2)} | {_f(c['adopted_changed'], 2)}",
            f"{_f(c['retired'], 2)}: {_f(c['retired_changed'], 2)} | {_f(c['retired_removed'], 2)}",
            _f(c["retained"], 2),
            relative,
            f"{_f(c['removed_old_given'], 2)} | {_f(c['removed_abstained'], 2)}",
        )
    return table


def override_lines(card: dict) -> list[str]:
    """module+rag's conflict rule, apart from the scores: how often it replaced the model's answer by the top
    passage's quote, and what the system would score had the quotes been taken as answers."""
    out = []
    for s in card["systems"]:
        o = s.get("with_override")
        if o:
            out.append(
                f"{s['system']}: scores above are what the model wrote; the conflict rule overrode {o['n_overridden']} "
                f"of {s['n']} answers with a passage quote (scored as quotes: EM {_f(o['exact_match'])}, "
                f"F1 {_f(o['token_f1'])}, contained {_f(o['answer_contained'])})"
            )
    return out


def print_scorecard(card: dict, console: Console) -> None:
    leak = card["leakage"]
    if not leak["ok"]:
        console.print(
            f"[bold red]LEAKAGE: {len(leak['leaked_items'])} eval question(s) are in the training data "
            f"({', '.join(leak['leaked_items'][:8])}): their scores measure memorisation[/bold red]"
        )
    wide = console if console.is_terminal else Console(file=console.file, width=max(console.width, 180))
    wide.print(scorecard_table(card))  # piped or logged: do not squeeze 14 columns into 80 characters
    if (probes := probe_table(card)) is not None:
        wide.print(probes)
    if (changes := change_table(card)) is not None:
        wide.print(changes)
        for c in card["changes"]["cost"]:
            console.print(
                f"update {c['update']} vs from scratch {c['from_scratch']}: {_f(c['update_wall_s'], 0)} s vs "
                f"{_f(c['from_scratch_wall_s'], 0)} s (ratio {_f(c['wall_ratio'], 2)}), {c['update_tokens']} vs "
                f"{c['from_scratch_tokens']} tokens (ratio {_f(c['tokens_ratio'], 2)})"
            )
    for line in override_lines(card):
        console.print(f"[dim]{line}[/dim]")
    for name, reason in card.get("skipped", {}).items():
        console.print(f"[yellow]not scored: {name}: {reason}[/yellow]")
    if leak["ok"]:
        console.print(
            f"[dim]leakage check: none of {leak['checked_items']} eval items in {leak['checked_records']} "
            f"training records[/dim]"
        )
    if leak.get("exempt_items"):
        console.print(f"[dim]not checked for leakage: {leak['exempt_items']} items ({leak['exempt_reason']})[/dim]")
