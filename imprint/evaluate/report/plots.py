"""The report's figures as inline SVG strings (matplotlib, text kept as text): no image files, no external assets.

- learned vs forgot: one point per system; x = how often its next-token prediction on general text differs from
  the base model's (100% - top-1 agreement on the base's own samples), y = token F1 on the corpus questions.
  Up and to the left is better: learned a lot, forgot little.
- training loss: one curve per module, from the per-step losses its manifest records.
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

MODE_COLOURS = {
    "base": "#6b7280",
    "icl": "#d97706",
    "rag": "#2563eb",
    "module": "#059669",
    "module+rag": "#7c3aed",
}


def _svg(fig, element_id: str) -> str:
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": element_id}):  # text as text; stable ids
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype: the SVG is inlined into HTML
    return re.sub(r"<svg\b", f'<svg id="{element_id}" role="img"', svg, count=1)


def learned_vs_forgot_svg(systems: list[dict]) -> str:
    """Scatter of learned (token F1) against forgot (next-token disagreement with the base), one point each."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    labels: dict[tuple[float, float], list[str]] = {}  # systems on one spot share one label
    for s in systems:
        agreement = s["forgot"]["self"]["top1_agreement"]
        f1 = s.get("token_f1")
        if f1 is None:
            continue
        x, y = 100 * (1 - agreement), 100 * f1
        ax.scatter([x], [y], s=70, color=MODE_COLOURS.get(s["mode"], "#111827"), zorder=3, gid=f"point-{s['system']}")
        spot = next((k for k in labels if abs(k[0] - x) < 0.3 and abs(k[1] - y) < 2.5), (x, y))
        labels.setdefault(spot, []).append(s["system"])
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(7, 5), fontsize=9)
    ax.set_xlabel("forgot: next-token disagreement with the base on general text (%)")
    ax.set_ylabel("learned: token F1 on corpus questions (%)")
    ax.set_ylim(-3, 103)
    left, right = ax.get_xlim()
    ax.set_xlim(min(left, -1), max(right, 5))
    ax.grid(True, alpha=0.3)
    for mode, colour in MODE_COLOURS.items():
        if any(s["mode"] == mode for s in systems):
            ax.scatter([], [], color=colour, label=mode)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _svg(fig, "learned-vs-forgot")


def loss_curves_svg(modules: dict) -> str | None:
    """Per-step training loss of every module that recorded one; None when none did."""
    curves = {label: m["metrics"].get("loss_curve") for label, m in modules.items()}
    curves = {label: c for label, c in curves.items() if c}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for label, curve in curves.items():
        marker = "o" if len(curve) < 30 else None  # a short run: show its few steps
        ax.plot(range(1, len(curve) + 1), curve, label=label, linewidth=1.4, marker=marker, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig, "loss-curves")
