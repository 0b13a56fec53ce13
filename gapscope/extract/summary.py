"""What an extraction did, and how it is shown at the end of ``gapscope extract``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

_SHOWN_SKIPS = 10


@dataclass
class ExtractSummary:
    """Result of :func:`gapscope.extract.extract`."""

    store: Path
    rows: dict[str, int]
    skipped: list[dict[str, Any]]
    encoder: dict[str, Any]
    encoded: int = 0  # rows this run encoded (not counting rows found from an earlier run)
    processed: int = 0  # rows this run went through, skipped ones included
    seconds: float = 0.0  # time of the extraction loop, model loading left out
    resumed: dict[str, int] = field(default_factory=dict)
    already_complete: bool = False
    shard: str | None = None
    # modality -> {"encoded", "processed", "seconds"} of this run
    throughput: dict[str, dict[str, float]] = field(default_factory=dict)
    # the class prompts written (n_classes, n_templates, path), when asked for
    classes: dict[str, Any] | None = None
    # torchrun: the ranks merged into ``store`` (rows and skipped files are the merged
    # store's; the throughput is rank 0's own)
    ranks: int | None = None

    @property
    def items_per_second(self) -> float:
        """Rows gone through per second of the extraction loop."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def print_summary(summary: ExtractSummary, console: Console | None = None) -> None:
    """Rows per modality, skipped files with their reasons, throughput."""
    console = console or Console()

    def out(text: str, **options: Any) -> None:
        # Paths and file names stay on one line, whatever the terminal width.
        console.print(text, soft_wrap=True, highlight=False, **options)

    if summary.already_complete:
        out(f"{summary.store}: already complete, nothing to do (pass --overwrite to extract again)")
    rows = ", ".join(f"{m} {n:,}" for m, n in summary.rows.items()) or "no rows"
    shard = f" (shard {summary.shard})" if summary.shard else ""
    # As gapscope merge says it.
    merged = f" (merged from {summary.ranks} torchrun ranks)" if summary.ranks is not None else ""
    out(f"[bold]Store[/bold] {summary.store}{shard}: {rows}{merged}")
    resumed = {m: n for m, n in summary.resumed.items() if n}
    if resumed and not summary.already_complete:
        out(
            "Resumed after "
            + ", ".join(f"{n:,} {m}" for m, n in resumed.items())
            + " rows from an earlier run"
        )
    if summary.encoder.get("random_init_seed") is not None:
        out(
            f"[yellow]Note:[/yellow] {summary.encoder.get('model')} has random weights (seed "
            f"{summary.encoder['random_init_seed']}): its embeddings carry no meaning."
        )
    if summary.skipped:
        counts: dict[str, int] = {}
        for entry in summary.skipped:
            counts[entry["modality"]] = counts.get(entry["modality"], 0) + 1
        out(
            "[bold]Skipped[/bold] "
            + ", ".join(f"{n} {m}" for m, n in counts.items())
            + " (listed in manifest.json under 'skipped'):"
        )
        for entry in summary.skipped[:_SHOWN_SKIPS]:
            out(f"  {describe_skip(entry)}", markup=False)
        if len(summary.skipped) > _SHOWN_SKIPS:
            out(f"  ... and {len(summary.skipped) - _SHOWN_SKIPS} more")
    if summary.classes is not None:
        c = summary.classes
        out(
            f"[bold]Classes[/bold] {c['n_classes']} class prompts, {c['n_templates']} "
            f"template(s) ensembled a class: {c['path']}"
        )
    if summary.processed and not summary.already_complete:
        rates = ", ".join(
            f"{m} {t['processed'] / t['seconds']:,.1f}"
            for m, t in summary.throughput.items()
            if t["seconds"] > 0
        )
        rank = "rank 0: " if summary.ranks is not None else ""
        out(
            f"{rank}{summary.processed:,} items in {summary.seconds:.1f} s "
            f"({summary.items_per_second:,.1f} items/s; {rates})"
        )


def describe_skip(entry: dict[str, Any]) -> str:
    """One line for a skipped row: where it came from and why it was skipped."""
    if entry.get("line") is not None:
        where = f"captions line {entry['line']}"
        file = f" -> {entry['file']!r}" if entry.get("file") else ""
        return f"{entry['modality']}: {where}{file}: {entry['reason']}"
    return f"{entry['modality']}: {entry['source']}: {entry['reason']}"
