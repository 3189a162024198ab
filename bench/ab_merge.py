"""One bench.ab table from several bench.ab reports: the A/B cells of runs made apart (another session,
another machine, a rerun of the failed ones) put together.

Usage: python -m bench.ab_merge A/report.json B/report.json --out merged.json   (merged.md beside it)
Runs are matched by name (<clip>__<arm>__s<seed>); where two reports hold the same run, the later one wins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.ab import Arm, Run, markdown, table
from bench.evaluate import read_json
from bench.report import write_report
from utils.cli import ArgumentParser, UserError, run_cli


def run_of(name: str) -> Run:
    """The Run (clip, arm name, seed) that a bench.ab run name <clip>__<arm>__s<seed> stands for."""
    parts = name.rsplit("__", 2)
    if len(parts) != 3 or not parts[2].startswith("s") or not parts[2][1:].isdigit():
        raise UserError(f"'{name}' is not a bench.ab run name <clip>__<arm>__s<seed>")
    return Run(parts[0], Arm(parts[1], "", ()), int(parts[2][1:]), Path())


def merge(reports: list[dict]) -> tuple[dict[str, dict], list[Run]]:
    """The runs' scores {name: scores} of bench.ab reports (later ones win) and their Runs, in first-seen
    order of clip and arm."""
    scores: dict[str, dict] = {}
    for report in reports:
        if not isinstance(report.get("runs"), dict):
            raise UserError(
                "a report has no 'runs': pass the report.json files that python -m bench.ab wrote"
            )
        scores |= report["runs"]
    runs = [run_of(name) for name in scores]
    order = {key: i for i, key in enumerate(dict.fromkeys((r.clip, r.arm.name) for r in runs))}
    runs.sort(key=lambda r: (order[(r.clip, r.arm.name)], r.seed))
    return scores, runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = ArgumentParser(prog="python -m bench.ab_merge", description=__doc__.split("\n\n")[0])
    p.add_argument("reports", type=Path, nargs="+", help="report.json files written by python -m bench.ab")
    p.add_argument("--out", type=Path, required=True, help="merged report (.json; the .md table beside it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Merge the reports, print the table, write the JSON and the Markdown."""
    args = parse_args(argv)
    for path in args.reports:
        if not path.is_file():
            raise UserError(f"'{path}' not found; pass the report.json files that python -m bench.ab wrote")
    reports = [read_json(path) for path in args.reports]
    scores, runs = merge(reports)
    rows = table(scores, runs)
    errors = {k: v for report in reports for k, v in report.get("errors", {}).items()}
    failed = {k: v for k, v in errors.items() if k.split()[-1] not in scores}
    sources = [
        {"path": str(p), "commit": r.get("commit"), "machine": r.get("machine")}
        for p, r in zip(args.reports, reports, strict=True)
    ]
    write_report(args.out, {"sources": sources, "table": rows, "runs": scores, "errors": failed}, args)
    args.out.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    for label, error in failed.items():
        print(f"still missing {label}: {error[:160]}", file=sys.stderr)
    print(f"report: {args.out} (and {args.out.with_suffix('.md').name})")
    return 0


if __name__ == "__main__":
    run_cli(main)
