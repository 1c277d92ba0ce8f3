#!/usr/bin/env python3
"""Draw build/bench/containers.json (containers.py's results) as a PNG.

usage: chart.py RESULTS.json OUT.png

One panel per metric of the table: a bar per runtime at its median, with a
min–max range; a log scale where the values span more than a factor of 30.
One more panel: PSS per idle instance against the memory given. Needs
matplotlib (Debian python3-matplotlib); runs on the host after the benchmark.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"host": "#7f7f7f", "crun": "#1f77b4", "cabin": "#2ca02c", "qemu": "#d62728"}
LOG_SPAN = 30.0


def bar_panel(ax, res, row):
    key = row["key"]
    names, medians, lows, highs, colors = [], [], [], [], []
    for rt in res["runtimes"]:
        s = res["summary"].get(rt, {}).get(key)
        if not s:
            continue
        names.append(res["labels"][rt].replace(" ", "\n", 1))
        medians.append(s["median"])
        lows.append(s["median"] - s["min"])
        highs.append(s["max"] - s["median"])
        colors.append(COLORS.get(rt, "#999999"))
    ax.set_title(row["label"] + ("" if row["lower_is_better"] else " ↑"), fontsize=9)
    if not medians:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    ax.bar(range(len(names)), medians, yerr=[lows, highs], color=colors, capsize=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=7)
    positive = [m for m in medians if m > 0]
    if positive and max(positive) / min(positive) > LOG_SPAN:
        ax.set_yscale("log")
    for i, m in enumerate(medians):
        ax.annotate(f"{m:.3g}", (i, m), ha="center", va="bottom", fontsize=7)


def growth_panel(ax, res):
    ax.set_title("PSS per idle instance (MiB) vs memory given (MiB)", fontsize=9)
    for rt in res["runtimes"]:
        by_size = {}
        for x in res["growth"].get(rt, []):
            by_size.setdefault(x["memory_mib"], []).append(x["idle_pss_mib"])
        if not by_size:
            continue
        sizes = sorted(by_size)
        med = [sorted(by_size[s])[len(by_size[s]) // 2] for s in sizes]
        ax.plot(sizes, med, marker="o", color=COLORS.get(rt), label=res["labels"][rt])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.legend(fontsize=7)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        res = json.load(f)
    rows = [r for r in res["rows"]
            if any(res["summary"].get(rt, {}).get(r["key"]) for rt in res["runtimes"])]
    panels = len(rows) + 1
    cols = 4
    nrows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows))
    axes = list(axes.flat)
    for ax, row in zip(axes, rows):
        bar_panel(ax, res, row)
    growth_panel(axes[len(rows)], res)
    for ax in axes[panels:]:
        ax.axis("off")
    env = res["environment"]
    fig.suptitle(f"VMs against containers — {env['kind']}, {env['date_utc']}, "
                 f"{env['host_cpu']} ({env['cpus']} CPUs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(argv[1], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
