"""Reports for people: the Markdown tables and the chart of an evaluation, from the metrics of
rl/metrics.py. One accuracy table serves the training run's before/after and `selfcorrect eval`."""
from __future__ import annotations

from pathlib import Path

from rl.metrics import TRANSITIONS


def accuracy_table(rows: dict[str, dict], num_turns: int, label: str) -> str:
    """Acc@t per turn, then Δ(t1,tT), Δi→c and Δc→i (percentages, with the 95 % interval where
    the report has one: `<name>_low` / `<name>_high`), one row per named report."""
    cols = [f"acc_t{t + 1}" for t in range(num_turns)] + (["delta", "delta_i2c", "delta_c2i"] if num_turns > 1 else [])
    names = {"delta": f"Δ(t1,t{num_turns})", "delta_i2c": "Δi→c", "delta_c2i": "Δc→i"}
    header = [label, *(names.get(c, c.replace("acc_t", "Acc@t")) for c in cols)]
    body = [[name, *(_cell(m, c, signed=c == "delta") for c in cols)] for name, m in rows.items()]
    return "\n".join(_md_table(header, body))


def repair_table(rows: dict[str, dict]) -> str:
    """The repair benchmark's fix rate (faulty first attempt -> correct at the last turn) and keep
    rate (correct first attempt -> still correct), with their 95 % intervals and row counts, one
    row per named report (rl/metrics.py:repair_metrics)."""
    header = ["repair benchmark", "fix rate: faulty → correct [95 % CI]", "keep rate: correct → still correct [95 % CI]"]
    body = [[name, *(f"{_cell(m, key)} of {int(m[f'{key}_n'])}" if key in m else "–" for key in ("fix_rate", "keep_rate"))]
            for name, m in rows.items()]
    return "\n".join(_md_table(header, body))


def _cell(m: dict, key: str, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = fmt.format(100 * m[key])
    if f"{key}_low" in m:
        text += " [" + ", ".join(fmt.format(100 * m[f"{key}_{end}"]) for end in ("low", "high")) + "]"
    return text


def comparison_label(name: str) -> str:
    """A comparison's name as reports print it: acc_t2 -> Acc@t2, fix_rate -> fix rate."""
    return {"fix_rate": "fix rate", "keep_rate": "keep rate"}.get(name, name.replace("acc_t", "Acc@t"))


def comparison_table(comparisons: dict[str, dict]) -> str:
    """Paired before/after differences (rl/stats.py:compare_models as dicts), one row each, and
    the phrase that says whether each is within noise."""
    rows = [[comparison_label(name), f"{100 * c['before']:.1f}", f"{100 * c['after']:.1f}",
             f"{100 * c['difference']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]",
             f"{c['b']} / {c['c']}", f"{c['p_value']:.3g}", "within noise" if c["within_noise"] else "beyond noise"]
            for name, c in comparisons.items()]
    return "\n".join(_md_table(["after − before", "before", "after", "difference [95 % CI]", "worse / better", "McNemar p", ""], rows))


def episode_tables(episodes, num_turns: int, max_samples: int) -> dict[str, tuple[list[str], list[list]]]:
    """A training step's tables, name -> (columns, rows): the turn-to-turn transitions of the
    sampled episodes (c→c, c→i, i→c, i→i per turn pair) and the first `max_samples` episodes,
    one row per turn (program, feedback, verdicts, reward, advantage)."""
    from rl.metrics import transition_counts

    sampled = [[t.correct for t in e.turns] for e in episodes if not e.turns[0].seeded]
    transitions = [[t + 1, t + 2, *(table[x] for x in TRANSITIONS)] for t, table in enumerate(transition_counts(sampled, num_turns))]
    rows = [[e.task.task_id, e.index, t + 1, turn.seeded, turn.code or "", turn.feedback or "", turn.correct,
             f"{turn.verdicts.public_passed}/{turn.verdicts.public_total}", f"{turn.verdicts.hidden_passed}/{turn.verdicts.hidden_total}",
             e.credit.rewards[t], e.credit.advantages[t]]
            for e in episodes[:max_samples] for t, turn in enumerate(e.turns)]
    return {
        "transitions": (["from_turn", "to_turn", *TRANSITIONS], transitions),
        "episodes": (["task_id", "episode", "turn", "seeded", "program", "feedback", "correct", "public", "hidden",
                      "reward", "advantage"], rows),
    }


def eval_report(result: dict) -> str:
    """The Markdown report of `selfcorrect eval`: settings line, Acc@t and Δs, transition counts,
    pass@k and n@k."""
    m, s = result["metrics"], result["settings"]
    turns, ks = s["turns"], s["ks"]
    decoding = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']:g}, top-p {s['top_p']:g}"
    lines = [
        f"**{s['dataset']}** ({s['split']}, {s['tasks']} tasks × {s['samples_per_task']} episode(s), "
        f"{turns} turn(s), {s['feedback']} feedback, {decoding}, {s['max_new_tokens']} new tokens/turn); "
        f"model `{s['model']}`. Percentages; {int(m['episodes'])} episodes.",
        "",
    ]
    lines += accuracy_table({Path(str(s["model"])).name: m}, turns, "model").splitlines()
    if "fix_rate" in m or "keep_rate" in m:
        lines += ["", "Repair benchmark (the first attempt is seeded; the policy writes the revisions):", ""]
        lines += repair_table({Path(str(s["model"])).name: m}).splitlines()
    if turns > 1:
        lines += ["", "Transitions between consecutive turns (episodes; early stops keep their last program):", ""]
        rows = [[f"t{tr['from_turn']}→t{tr['to_turn']}", *(str(tr[x]) for x in TRANSITIONS),
                 f"{100 * (tr['i2c'] - tr['c2i']) / max(m['episodes'], 1):+.1f}"] for tr in result["transitions"]]
        lines += _md_table(["turns", "c→c", "c→i", "i→c", "i→i", "Δ"], rows)
    lines += ["", f"pass@k at each turn (unbiased, from {s['samples_per_task']} episode(s) per task) and "
                  f"n@k (n episodes of ≤ {turns} turns = n·{turns} samples; ≥ 1 of n final programs correct):", ""]
    header = ["turn", *(f"pass@{k}" for k in ks)]
    rows = [[f"t{t + 1}", *(f"{100 * m[f'pass@{k}_t{t + 1}']:.1f}" for k in ks)] for t in range(turns)]
    lines += _md_table(header, rows)
    lines += [""]
    lines += _md_table([f"{k}@{k * turns}" for k in ks], [[f"{100 * m[f'{k}@{k * turns}']:.1f}" for k in ks]])
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def plot_transitions(result: dict, path: Path) -> None:
    """Left: Acc@t per turn. Right: for each consecutive turn pair, four bars: the share of
    episodes c→c / i→c / c→i / i→i, each labelled with its episode count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, s = result["metrics"], result["settings"]
    turns, n = s["turns"], max(int(m["episodes"]), 1)
    fig, (ax_acc, ax_tr) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, max(turns - 1, 1) + 0.6]})
    xs = list(range(1, turns + 1))
    acc = [100 * m[f"acc_t{t}"] for t in xs]
    ax_acc.plot(xs, acc, marker="o", color="#1f4e79", linewidth=2)
    for x, y in zip(xs, acc):
        ax_acc.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=10)
    ax_acc.set_xticks(xs, [f"t{t}" for t in xs])
    ax_acc.set_xlim(0.5, turns + 0.5)
    top = max(acc + [1.0])
    ax_acc.set_ylim(0, min(100, top * 1.3 + 2))
    ax_acc.set_ylabel("Acc@t (% of episodes correct)")
    ax_acc.set_title("Accuracy after each turn")
    ax_acc.grid(axis="y", alpha=0.3)

    styles = [("c2c", "correct → correct", "#2e7d32"), ("i2c", "incorrect → correct", "#66bb6a"),
              ("c2i", "correct → incorrect", "#e53935"), ("i2i", "incorrect → incorrect", "#9e9e9e")]
    pairs = result["transitions"]
    if pairs:
        # Grouped rather than stacked: at low accuracy i→i dwarfs the rest, and the transitions
        # that matter (i→c, c→i) would be slivers. Each bar is labelled with its episode count.
        width = 0.2
        top = max(100 * p[key] / n for p in pairs for key, _, _ in styles)
        for j, (key, label, color) in enumerate(styles):
            xs_j = [i + (j - 1.5) * width for i in range(len(pairs))]
            heights = [100 * p[key] / n for p in pairs]
            ax_tr.bar(xs_j, heights, width=width * 0.92, color=color, label=label)
            for x, h, p in zip(xs_j, heights, pairs):
                ax_tr.text(x, h + top * 0.015, str(p[key]), ha="center", va="bottom", fontsize=9)
        ax_tr.set_xticks(range(len(pairs)), [f"turn {p['from_turn']} → turn {p['to_turn']}" for p in pairs])
        ax_tr.set_xlim(-0.6, len(pairs) - 0.4)
        ax_tr.set_ylim(0, min(100, top * 1.15) + 1)
        ax_tr.set_ylabel("% of episodes")
        ax_tr.set_title("Turn-to-turn transitions (bar labels: episode counts)")
        ax_tr.grid(axis="y", alpha=0.3)
        ax_tr.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    else:
        ax_tr.axis("off")
        ax_tr.text(0.5, 0.5, "one turn: no transitions", ha="center", va="center")
    decoding = "greedy" if s["temperature"] == 0 else f"T={s['temperature']:g}"
    fig.suptitle(f"{s['dataset']} ({s['split']}, {s['tasks']} tasks × {s['samples_per_task']}), {s['feedback']} feedback, "
                 f"{decoding} — {Path(str(s['model'])).name}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
