"""report.html: one self-contained page (inline CSS and SVG, no script, no external asset) from a scorecard.

Sections: the leakage verdict, the learned-vs-forgot scatter, the scorecard table (learned, forgot, cost per
system), retention benchmarks, lm-evaluation-harness results, training loss curves, and every question with
each system's answer and evidence. Everything shown is read from scorecard.json, so the page and the JSON
never disagree.
"""

from __future__ import annotations

from html import escape

from imprint.evaluate.report.plots import MODE_COLOURS, learned_vs_forgot_svg, loss_curves_svg
from imprint.evaluate.report.terminal import override_lines, plus_minus, retention_lines

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;margin:24px auto;
max-width:1280px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb}
.meta{color:#4b5563}.note{color:#6b7280;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #e5e7eb;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#ecfdf5;border:1px solid #10b981;padding:8px 12px}
.bad{background:#fef2f2;border:1px solid #ef4444;padding:8px 12px}
.right{background:#ecfdf5}.wrong{background:#fef2f2}.abstain{background:#f3f4f6;font-style:italic}
.mode{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
details{font-size:12px;color:#374151}figure{margin:8px 0}
"""


def _num(value, digits: int = 3, scale: float = 1.0) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, int) and scale == 1.0:
        return f"{value:,}"
    return f"{value * scale:.{digits}f}"


def _cell(value, digits: int = 3, scale: float = 1.0) -> str:
    return f'<td class="num">{_num(value, digits, scale)}</td>'


def _leakage(card: dict) -> str:
    leak = card["leakage"]
    checked = (
        f"{leak['checked_items']} eval items checked against {leak['checked_records']:,} training records "
        f"({escape(', '.join(leak['datasets'])) or 'no module evaluated'})"
    )
    if leak["ok"]:
        return f'<p class="ok" id="leakage">No leakage: {checked}; no question, near-duplicate or answer sentence.</p>'
    items = "".join(
        f"<li>{escape(x['item_id'])}: {escape(x['kind'])} in {escape(x['dataset'])} "
        f"({escape(x['record_id'])}): {escape(x['training_text'][:160])}</li>"
        for x in leak["leaks"][:20]
    )
    return (
        f'<div class="bad" id="leakage"><b>LEAKAGE: {len(leak["leaked_items"])} eval question(s) are in the '
        f"training data</b>; their scores measure memorisation. {checked}.<ul>{items}</ul></div>"
    )


def _ece(system: dict) -> str:
    calibration = system.get("calibration", {})
    if not calibration.get("calibrated"):
        note = "uncalibrated"
    elif calibration.get("fit_on_these_questions"):
        note = f"fit on these questions; cross-validated {_num(calibration.get('ece_cv'))}"
    else:
        note = "calibrated"
    return f'<td class="num">{_num(system["ece"])}<br><span class="note">{note}</span></td>'


def _scorecard_table(card: dict) -> str:
    head = (
        "<tr><th rowspan=2>system</th><th colspan=7>learned</th><th colspan=3>forgot</th><th colspan=6>cost</th></tr>"
        "<tr><th>EM</th><th>token F1</th><th>answer contained</th><th>choice acc (norm)</th><th>judge</th>"
        "<th>abstains on unanswerable</th>"
        "<th>ECE</th><th>top-1 agreement with base</th><th>&Delta;NLL (KL est.)</th><th>retention benchmarks "
        "&Delta;</th><th>train s</th><th>train tokens</th><th>module MB</th><th>latency p50 / p95 ms</th>"
        "<th>prompt tokens</th><th>weights</th></tr>"
    )
    rows = []
    for s in card["systems"]:
        forgot, cost = s["forgot"], s["cost"]
        own = forgot["self"]
        deltas = [escape(line) for line in retention_lines(forgot)]
        choice = f"{_num(s['choice_accuracy'])} ({_num(s['choice_accuracy_norm'])})" if s["n_choice"] else "&ndash;"
        size = None if cost["module_bytes"] is None else cost["module_bytes"] / 1e6
        colour = MODE_COLOURS.get(s["mode"], "#111827")
        rows.append(
            f'<tr class="system"><td><span class="mode" style="background:{colour}"></span>{escape(s["system"])}'
            f' <span class="note">{escape(s["mode"])}</span></td>'
            f"{_cell(s['exact_match'])}{_cell(s['token_f1'])}{_cell(s.get('answer_contained'))}"
            f"<td class='num'>{choice}</td>{_cell(s['judge_accuracy'])}"
            f"{_cell(s['abstention_unanswerable'])}{_ece(s)}"
            f"<td class='num'>{plus_minus(own['top1_agreement'], own.get('top1_agreement_se'))}</td>"
            f"<td class='num'>{plus_minus(own['nll_delta'], own.get('nll_delta_se'))}</td>"
            f"<td>{'<br>'.join(deltas) or '&ndash;'}</td>"
            f"{_cell(cost['train_wall_s'], 0)}{_cell(cost['train_tokens'])}{_cell(size, 1)}"
            f"<td class='num'>{_num(cost['latency_ms_p50'], 0)} / {_num(cost['latency_ms_p95'], 0)}</td>"
            f"{_cell(cost['prompt_tokens_mean'], 0)}<td>{escape(s['weights'])}</td></tr>"
        )
    return f'<table id="scorecard"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _benchmarks_table(card: dict) -> str:
    sources = sorted({src for s in card["systems"] for src in s["forgot"]["benchmarks"]})
    if not sources:
        return '<p class="note">No retention benchmark given (pass a JSONL with "split": "retain").</p>'
    rows = []
    for s in card["systems"]:
        for source in sources:
            b = s["forgot"]["benchmarks"].get(source, {})
            cells = "".join(
                _cell(b.get(k)) + _cell(b.get(f"{k}_delta"))
                for k in ("exact_match", "token_f1", "choice_accuracy", "choice_accuracy_norm")
            )
            rows.append(f"<tr><td>{escape(s['system'])}</td><td>{escape(source)}</td>{_cell(b.get('n'))}{cells}</tr>")
    head = "".join(f"<th>{k}</th><th>&Delta;</th>" for k in ("EM", "token F1", "choice acc", "choice acc norm"))
    return (
        f'<table id="retention"><thead><tr><th>system</th><th>benchmark</th><th>n</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _changes_table(card: dict) -> str:
    """A change set's adopted / retired / retained per system (see imprint/evaluate/changes.py)."""
    changes = card.get("changes")
    if not changes:
        return ""
    keys = (
        *("adopted", "adopted_added", "adopted_changed", "retired", "retired_changed", "retired_removed"),
        *("retained", "retained_of_reference", "retired_of_reference", "removed_old_given", "removed_abstained"),
    )
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(c.get('kind') or '')}</td><td>{escape(c.get('reference') or '')}</td>"
        + "".join(_cell(c.get(k), 2) for k in keys)
        + "</tr>"
        for name, c in changes["systems"].items()
    )
    cost = "".join(
        f"<li>update {escape(c['update'])} vs from scratch {escape(c['from_scratch'])}: wall time ratio "
        f"{_num(c['wall_ratio'], 2)}, tokens ratio {_num(c['tokens_ratio'], 2)}</li>"
        for c in changes["cost"]
    )
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in ("system", "kind", "previous", *keys))
    n = ", ".join(f"{v} {k}" for k, v in changes["n"].items())
    return (
        f"<h2>Change set</h2><p class='note'>{escape(n)} questions; a value is given when {escape(changes['metric'])}."
        f"</p><table id='changes'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table><ul>{cost}</ul>"
    )


def _lm_eval(card: dict) -> str:
    parts = []
    for s in card["systems"]:
        result = s["forgot"].get("lm_eval")
        if result is None:
            continue
        if "skipped" in result:
            parts.append(f"<li>{escape(s['system'])}: skipped ({escape(result['skipped'])})</li>")
            continue
        for task, metrics in result.items():
            shown = ", ".join(f"{escape(k)} {v}" for k, v in metrics.items())
            parts.append(f"<li>{escape(s['system'])} / {escape(task)}: {shown}</li>")
    return f"<h2>lm-evaluation-harness</h2><ul>{''.join(parts)}</ul>" if parts else ""


def _overrides(card: dict) -> str:
    """module+rag's conflict rule in its own lines: never mixed into the scores above."""
    lines = override_lines(card)
    return f'<p class="note">{"<br>".join(escape(line) for line in lines)}</p>' if lines else ""


def _evidence(row: dict) -> str:
    if not row.get("evidence"):
        return ""
    quotes = "".join(
        f"<li>{escape(str(e.get('doc_id', '')))} {escape(str(e.get('chunk_id', '')))}: "
        f"{escape(str(e.get('quote', ''))[:240])}</li>"
        for e in row["evidence"]
    )
    return f"<details><summary>evidence ({len(row['evidence'])})</summary><ul>{quotes}</ul></details>"


def _answer_cell(row: dict | None) -> str:
    if row is None:
        return "<td>&ndash;</td>"
    if row.get("abstained"):
        css = "abstain"
    elif row["em"] is None:
        css = "wrong"  # answered a question the corpus cannot answer
    else:
        css = "right" if row["em"] else "wrong"
    override = ""
    if row.get("override"):  # module+rag's conflict rule showed a passage quote instead: scored apart, labelled
        o = row["override"]
        override = (
            f'<br><span class="note">overridden by evidence (shown to the user, not scored above; as an answer: '
            f"F1 {_num(o['f1'])}): {escape(o['answer'][:240])}</span>"
        )
    return (
        f'<td class="{css}">{escape(row["answer"]) or "<i>(empty)</i>"} '
        f'<span class="note">{row["confidence"]:.2f}</span>{override}{_evidence(row)}</td>'
    )


def _choice_row(row: dict) -> dict:
    """A multiple-choice row shown like an open answer: the length-normalised pick, right or wrong."""
    return {
        "question": row["question"],
        "gold": [row["choices"][row["gold"]]],
        "answer": row["answer_norm"],
        "em": row["correct_norm"],
        "confidence": 0.0,
        "evidence": [],
    }


def _questions_table(card: dict) -> str:
    systems = card["systems"]
    by_system = [{r["id"]: r for r in s["rows"]} | {r["id"]: _choice_row(r) for r in s["choice_rows"]} for s in systems]
    ids = list(by_system[0]) if by_system else []
    head = "".join(f"<th>{escape(s['system'])}</th>" for s in systems)
    rows = []
    for qid in ids:
        first = by_system[0][qid]
        gold = " | ".join(escape(g) for g in first["gold"]) or "<i>not in the corpus</i>"
        cells = "".join(_answer_cell(rows_of.get(qid)) for rows_of in by_system)
        rows.append(
            f'<tr class="question"><td>{escape(qid)}</td><td>{escape(first["question"])}</td>'
            f"<td>{gold}</td>{cells}</tr>"
        )
    return (
        f'<table id="questions"><thead><tr><th>id</th><th>question</th><th>accepted</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_report(card: dict) -> str:
    """The whole page as a string."""
    loss = loss_curves_svg(card["modules"])
    skipped = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in card.get("skipped", {}).items())
    command = f"<p class='meta'>command: <code>{escape(card['command'])}</code></p>" if card.get("command") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>imprint scorecard</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>imprint scorecard: learned vs forgot vs cost</h1>
<p class="meta">base model <b>{escape(card["base_model"])}</b> &middot; {card["n_questions"]} corpus questions,
{card["n_retain"]} retention questions &middot; eval sets {escape(card["eval_set"])}
&middot; {escape(card["created_at"])}</p>
{command}
{_leakage(card)}
{f"<p class='bad'>Not scored:</p><ul>{skipped}</ul>" if skipped else ""}
<h2>Learned vs forgot</h2>
<figure>{learned_vs_forgot_svg(card["systems"])}</figure>
<p class="note">Forgetting is a property of the weights: icl and rag use the base's weights unchanged, module+rag
its module's. Self-retention: {card["retention"]["samples"]} base samples, {card["retention"]["tokens"]} tokens;
{escape(card["retention"]["note"])}.</p>
<h2>Scorecard</h2>
{_scorecard_table(card)}
<p class="note">EM and token F1: SQuAD-normalised, best over accepted answers. Choice accuracy: argmax of the summed
log-likelihood of each choice; (norm): divided by the choice's UTF-8 length. ECE: 10 equal-width bins of confidence
against exact match. Latency: per question, in batches. Every score is of what the model wrote.</p>
{_overrides(card)}
{_changes_table(card)}
<h2>Retention benchmarks</h2>
{_benchmarks_table(card)}
{_lm_eval(card)}
<h2>Training loss</h2>
{f"<figure>{loss}</figure>" if loss else '<p class="note">No module with a recorded loss curve.</p>'}
<h2>Every question</h2>
{_questions_table(card)}
</body></html>
"""
