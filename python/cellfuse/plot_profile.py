"""The profiler's picture: the per-step time split (GEMMs / pointwise kernels / host overhead) of
each runner in a profile report, as stacked bars in a PNG. matplotlib is an optional dependency:
without it, a CellfuseError says how to get it.

    python -m cellfuse.plot_profile REPORT.json OUT.png

REPORT.json is ``cellfuse profile ... --json`` or ``cellfuse.profile(..., json=...)``.
"""
import json
import sys

from ._errors import CellfuseError

_PARTS = (("gemm_us_per_step", "GEMMs", "#4c72b0"), ("pointwise_us_per_step", "pointwise kernels", "#55a868"),
          ("overhead_us_per_step", "host overhead", "#c44e52"))


def columns_of(report):
    """The runners' per-step splits of a report: {"cellfuse": {...}, "eager": {...}}. A C++ report
    (`cellfuse profile --json`) has one runner, its phases summed."""
    if "columns" in report:
        return {k: v for k, v in report["columns"].items() if "error" not in v}
    phases = report.get("phases", [])
    return {"cellfuse": {key: sum(p[key] for p in phases) for key, _, _ in _PARTS}}


def plot(report, path):
    """Writes the PNG of `report` (a dict, as to_json() gives) to `path`."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CellfuseError("the profile's PNG needs matplotlib (an optional dependency of cellfuse): "
                            "pip install matplotlib") from None
    cols = columns_of(report)
    cells = report.get("cellfuse", report).get("cells", [])
    names = list(cols)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4.2), dpi=120)
    bottoms = [0.0] * len(names)
    for key, label, color in _PARTS:
        values = [cols[n].get(key, 0.0) for n in names]
        ax.bar(names, values, bottom=bottoms, label=label, color=color, width=0.55)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    for i, total in enumerate(bottoms):
        ax.text(i, total, f"{total:.0f} us", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("time per step (us)")
    device = report.get("cellfuse", report).get("machine", {}).get("device", "")
    ax.set_title("per-step time: " + (", ".join(cells) if cells else "cellfuse profile") +
                 (f"\n{device}" if device else ""), fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, max(bottoms + [1.0]) * 1.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2:
        print("usage: python -m cellfuse.plot_profile REPORT.json OUT.png", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        report = json.load(f)
    try:
        plot(report, args[1])
    except CellfuseError as e:
        print(f"cellfuse: error: {e}", file=sys.stderr)
        return 2
    print(f"picture: {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
