"""The final table of a train_many run (subject, status, time, Gaussians, held-out PSNR, mouth LMD, lip-sync
score), written as OUT/summary.json and OUT/summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from many.progress import format_duration
from many.subjects import Subject, result_scores
from utils.atomic import atomic_write_bytes, atomic_write_json

COLUMNS = ("subject", "status", "time", "Gaussians", "PSNR (dB)", "mouth LMD (px)", "lip sync")


def subject_row(subject: Subject, status: dict[str, Any]) -> dict[str, Any]:
    """One table row: the status record of the subject joined with the scores of its results/."""
    seconds = status.get("seconds", {})
    return {
        "subject": subject.name,
        "status": status.get("status", "pending"),
        "stage": status.get("stage"),
        "error": status.get("error", ""),
        "seconds": round(sum(seconds.values()), 1) if seconds else None,
        **result_scores(subject),
        "video": str(subject.video),
        "folder": str(subject.folder),
        "log": str(subject.log),
    }


def _cell(value: float | int | None, digits: int) -> str:
    """A number with `digits` decimals, '-' when missing."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if digits else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, followed by the one-line error of every failed subject and the reason of
    every lip-sync score that was not judged (held-out part too short)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (
            r["subject"], r["status"], format_duration(r["seconds"]) if r["seconds"] is not None else "-",
            _cell(r["gaussians"], 0), _cell(r["psnr"], 2), _cell(r["lmd_mouth"], 2), _cell(r["lipsync"], 3),
        )  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r['subject']} ({r['stage']}): {r['error']}" for r in rows if r["status"] == "failed"]
    notes = [
        f"- {r['subject']}: lip sync not judged: {r['lipsync_note']}" for r in rows if r.get("lipsync_note")
    ]
    below = errors + notes
    return "\n".join(lines + ([""] + below if below else [])) + "\n"


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many subjects are in each status."""
    result: dict[str, int] = {}
    for r in rows:
        result[r["status"]] = result.get(r["status"], 0) + 1
    return result


def write_summary(out: Path, rows: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """Write OUT/summary.json (run settings, counts, rows) and OUT/summary.md atomically."""
    atomic_write_json(Path(out) / "summary.json", {"run": run, "counts": counts(rows), "subjects": rows})
    atomic_write_bytes(Path(out) / "summary.md", ("# train_many summary\n\n" + markdown_table(rows)).encode())
