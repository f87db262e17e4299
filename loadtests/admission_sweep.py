"""Admission settings side by side in one run: the interactive scenario at its peak rate and at twice it, on a
service started afresh for every setting (capacity in sequences, longest first-call wait), so the default is
the setting measured best here, not a guess.

    python -m loadtests.admission_sweep                                  # the settings below, rates 8 and 16
    python -m loadtests.admission_sweep --settings 128:30,64:2 --rates 8,16 --duration 40

For every setting: goodput at each rate, and goodput at the highest rate over the peak (the issue's target:
past saturation goodput stays within 10% of its peak, >= 0.9). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests import load
from loadtests.harness import RESULTS, print_result

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "interactive.toml"
OUT = RESULTS / "admission_sweep"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.admission_sweep",
        description="Admission capacity and first-call wait, side by side under the interactive load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--settings",
        default="128:30,128:2,64:2,32:2",
        help="comma-separated CAPACITY:WAIT pairs (TTC_ADMISSION_MAX_SEQUENCES:TTC_ADMISSION_MAX_WAIT_SECONDS)",
    )
    parser.add_argument("--scenario", type=Path, default=SCENARIO, help="the load scenario")
    parser.add_argument("--rates", default="8,16", help="comma-separated rates: the peak, then past it")
    parser.add_argument("--duration", type=float, default=40.0, help="measured seconds per rate")
    return parser.parse_args(argv)


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Goodput and 429s against offered rate, one line per setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (goodput, rejected) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        label = f"{row['capacity']} sequences, wait {row['wait_seconds']:g} s"
        rates = [float(rate) for rate in row["goodput"]]
        goodput.plot(rates, list(row["goodput"].values()), marker="o", label=label)
        rejected.plot(rates, list(row["rejected_429"].values()), marker="o", label=label)
    goodput.set(xlabel="offered rate (requests/s)", ylabel="requests/s within SLO", title="Goodput")
    rejected.set(xlabel="offered rate (requests/s)", ylabel="429s", title="Shed at the front door")
    for axes in (goodput, rejected):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle("interactive load: admission settings side by side")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows = []
    for setting in args.settings.split(","):
        capacity, wait = setting.split(":")
        os.environ["TTC_ADMISSION_MAX_SEQUENCES"] = capacity  # the service started below inherits these
        os.environ["TTC_ADMISSION_MAX_WAIT_SECONDS"] = wait
        label = f"c{capacity}-w{wait}"
        print(f"== capacity {capacity} sequences, first-call wait {wait} s", flush=True)
        result = load.main(
            [str(args.scenario), "--rates", args.rates, "--duration", str(args.duration), "--out",
             str(OUT), "--label", label]
        )  # fmt: skip
        per_rate = result["per_rate"]
        rows.append(
            {
                "capacity": int(capacity),
                "wait_seconds": float(wait),
                "goodput": {str(row["rate"]): row["goodput"] for row in per_rate},
                "rejected_429": {str(row["rate"]): row["rejected_429"] for row in per_rate},
                "peak_goodput": result["peak_goodput"],
                "last_over_peak": result["last_goodput_over_peak"],
                "max_budget_fraction": max(row["max_budget_fraction"] or 0.0 for row in per_rate),
            }
        )
    print()
    for row in rows:
        print(
            f"capacity {row['capacity']:>4} wait {row['wait_seconds']:>4g} s: goodput {row['goodput']} "
            f"429s {row['rejected_429']}; past the peak {row['last_over_peak']:.2f} of it"
        )
    best = max(rows, key=lambda row: (row["last_over_peak"] >= 0.9, row["peak_goodput"]))
    final = {
        "benchmark": "admission_sweep",
        "rates": args.rates,
        "rows": rows,
        "best": {"capacity": best["capacity"], "wait_seconds": best["wait_seconds"]},
    }
    picture = plot(rows, OUT / "admission_sweep.png")
    final["plot"] = str(picture) if picture else None
    print_result(final, OUT / "result.json")
    return final


if __name__ == "__main__":
    main()
