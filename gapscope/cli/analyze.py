"""``gapscope analyze``: the report of a store or arrays, as tables, JSON, flat JSON, CSV or
an HTML page."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from gapscope.cli import options as opt
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import (
    analyse_with_status,
    check_output_paths,
    check_parquet_format,
    check_stdout_once,
    require_parquet_writer,
    write_output,
    write_rendered,
)
from gapscope.cli.report_input import check_distinct_paths

__all__ = ["analyze_command", "embedding_source", "input_files"]


def input_files(
    files: Mapping[str, str | Path | None],
    specs: Mapping[str, list[str] | None] | None = None,
    **named: str | Path | None,
) -> dict[str, Path | None]:
    """The files an analysis reads, by how the command names them (``--image file``), for
    :func:`~gapscope.cli.report_input.check_distinct_paths`: no output may replace one.

    ``files`` are the modality arrays (``{"image": path}``); ``specs`` the repeatable options
    whose values name a file after an optional ``NAME=`` and before an optional ``:COLUMN``
    (``--labels image=meta.parquet:label``); ``named`` the other files (``classes=path``).
    Only files that exist are returned (a URL or a missing file cannot be replaced).
    """
    found: dict[str, Path | None] = {}
    for name, path in files.items():
        found[f"--{name} file"] = None if path is None else Path(path)
    for option, values in (specs or {}).items():
        for i, value in enumerate(values or []):
            path = Path(value.split("=", 1)[-1])
            if not path.exists() and ":" in str(path):
                path = Path(str(path).rsplit(":", 1)[0])
            found[f"--{option.replace('_', '-')} file" + (f" #{i + 1}" if i else "")] = path
    for option, path in named.items():
        found[f"--{option.replace('_', '-')} file"] = None if path is None else Path(path)
    return {role: path for role, path in found.items() if path is not None and path.is_file()}


def embedding_source(
    store: str | Path | None,
    files: Mapping[str, str | Path | None],
    labels: list[str] | None,
    *,
    verify: bool = False,
    modality: list[str] | None = None,
    groups: list[str] | None = None,
    classes: Path | None = None,
    class_names: Path | None = None,
) -> Any:
    """The EmbeddingSet of a store folder, or of --image/--text/--audio and --modality
    NAME=PATH arrays (with --groups and --labels), with the --classes prompts (and their
    --class-names) in place of a store's own."""
    from gapscope.data.class_prompts import load_class_prompts
    from gapscope.data.embedding_set import named_paths, open_source
    from gapscope.errors import GapscopeError

    if class_names is not None and classes is None:
        raise GapscopeError("--class-names names the rows of --classes: give --classes too")
    given: dict[str, Any] = {m: p for m, p in files.items() if p is not None}
    for name, path in named_paths(modality or [], "--modality").items():
        if name in given:
            raise GapscopeError(f"--modality: {name} is given twice")
        given[name] = path
    prompts = None if classes is None else load_class_prompts(classes, class_names)
    return open_source(
        store, given, labels or None, verify=verify, groups=groups or None, classes=prompts
    )


@handle_errors
def analyze_command(
    store: opt.StoreArgument = None,
    image: opt.Image = None,
    text: opt.Text = None,
    audio: opt.Audio = None,
    labels: opt.Labels = None,
    modality: opt.Modality = None,
    groups: opt.Groups = None,
    classes: opt.Classes = None,
    class_names: opt.ClassNames = None,
    metrics: opt.Metrics = "all",
    k: opt.Kvalues = "1,5,10",
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    sample: opt.Sample = None,
    block_size: opt.BlockSize = None,
    precision: opt.Precision = "fp32",
    bootstrap: opt.Bootstrap = None,
    confidence: opt.Confidence = 0.95,
    interval: opt.Interval = "bca",
    step: opt.Step = None,
    tag: opt.Tags = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write a self-contained HTML report with the tables and plots (- for "
            "stdout, with --output FILE).",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="table, json, flat, csv, or long (a tidy table, one row a metric with pair, "
            "modality, direction, metric, k, value, ci_low, ci_high, se, step, tags and "
            "checkpoint: CSV, or Parquet with -o FILE.parquet).",
        ),
    ] = "table",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the --format output to this file instead of stdout (--format long: "
            "Parquet when the name ends in .parquet, which needs the parquet extra).",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON report to this file.")
    ] = None,
    quiet: opt.Quiet = False,
    verify: opt.Verify = False,
) -> None:
    """Compute the modality gap, cone, uniformity, alignment, MIR, retrieval recall and
    zero-shot accuracy (with class prompts).

    With --bootstrap B the gap, cosines, cone, alignment, uniformity, retrieval and zero-shot
    accuracy get a bootstrap interval (value \\[low, high] in the table,
    "<metric>_ci": \\[low, high] in JSON) from B resamples of groups, BCa unless
    --interval percentile; MIR, the diagnostics, the what-ifs and GRAM volume get none.

    Example:

        gapscope analyze examples/example-store

        gapscope analyze --image img.npy --text txt.npy --format json -o report.json

        gapscope analyze examples/example-store --bootstrap 200 --json report.json

        gapscope analyze examples/example-store --html report.html

        gapscope analyze --image img.npy --text txt.npy --labels image=img_labels.npy
        --classes classes.npy --class-names classes.txt

        gapscope analyze --image img.npy --text txt.npy --device cuda --precision bf16

        gapscope analyze --modality video=vid.npy --modality text=cap.parquet:embedding
        --groups video=vid_ids.npy --groups text=cap.parquet:video_id

        gapscope analyze examples/example-store --step 1000 --tag lr=3e-4 -f csv -o m.csv

        gapscope analyze examples/example-store --step 1000 -f long -o metrics.parquet
    """
    from gapscope.engine.distributed import (
        launcher_rank,
        process_group,
        process_group_share,
        sharing,
    )
    from gapscope.report.formats import FORMATS, render_text
    from gapscope.report.long import is_parquet_path, write_long
    from gapscope.report.run import check_step, parse_tags

    opt.check_choice(fmt, FORMATS, "format")
    check_parquet_format(output, fmt)
    # --html -: the page on stdout, as -o - and --json - write there; never with another output.
    check_stdout_once(html=html, output=output, json=json_path)
    check_distinct_paths(
        input_files(
            {"image": image, "text": text, "audio": audio},
            {"labels": labels, "groups": groups, "modality": modality},
            classes=classes,
            class_names=class_names,
        ),
        {"--output": output, "--json": json_path, "--html": html},
    )
    check_step(step)
    tags = parse_tags(tag)

    def open_checked(writer: bool) -> Any:
        """The source, once the writer's outputs are checked: what this process's own file
        system and packages decide, which may differ from another process's."""
        if writer:
            require_parquet_writer(output)
            check_output_paths(output=output, json=json_path, html=html)
        return embedding_source(
            store,
            {"image": image, "text": text, "audio": audio},
            labels,
            verify=verify,
            modality=modality,
            groups=groups,
            classes=classes,
            class_names=class_names,
        )

    options: dict[str, Any] = dict(
        metrics=metrics,
        k=k,
        seed=seed,
        sample=sample,
        block_size=block_size,
        bootstrap=bootstrap,
        confidence=confidence,
        interval=interval,
        precision=precision,
        step=step,
        tags=tags,
    )
    info = launcher_rank()
    if info is None:
        source = open_checked(writer=True)
        report = analyse_with_status(source, quiet, device=device, **options)
    else:
        # torchrun or srun: every process analyses, sharing the passes; rank 0 writes. The
        # input is opened once every process has joined the group: a process that cannot
        # open it (a node without the store) then ends the others at once, instead of
        # leaving them to wait for it in the group until its timeout.
        with process_group(info, device) as rank_dev:
            with sharing(process_group_share()):
                source = open_checked(writer=info.rank == 0)
            report = analyse_with_status(
                source, quiet or info.rank != 0, device=rank_dev, distributed=True, **options
            )
        if info.rank != 0:
            return
    if json_path is not None:
        write_output(report.to_json(), json_path)
    if html is not None:
        from gapscope.report.html import render_html

        write_output(render_html(report), html)
        try:  # drawn already by the page when it is installed
            import matplotlib  # noqa: F401
        except ImportError:
            # The page is written (the tables need no plots) and says so; stderr says it too.
            page = "the HTML page" if str(html) == "-" else str(html)
            typer.echo(
                f"warning: {page} has no plots: matplotlib is not installed "
                "(pip install 'gapscope[plot]')",
                err=True,
            )
    if fmt == "table":
        from gapscope.report.terminal import render_report

        write_rendered(lambda console: render_report(report, console), output)
    elif fmt == "long" and output is not None and is_parquet_path(output):
        write_long(output, report)
    else:
        write_output(render_text(report, fmt), output)
