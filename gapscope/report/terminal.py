"""Render a :class:`Report` in the terminal with rich: one table a modality pair.

Each row has the metric, its value and a one-line reading in plain words. The readings use
rough bands from the literature (e.g. CLIP ViT-B/32 on MSCOCO has a gap of about 0.82 in
Liang et al. 2022); they orient, they do not judge — compare checkpoints with ``gapscope diff``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gapscope.report.model import Report


def _fmt(value: Any, se: Any = None, percent: bool = False, ci: Any = None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    text = f"{100 * value:.1f}%" if percent else f"{value:.4f}"
    if se is not None:
        text += f" ± {100 * se:.1f}%" if percent else f" ± {se:.4f}"
    if ci is not None:
        low, high = ci
        # Retrieval tables have a column per K: the interval goes on a line of its own.
        text += f"\n[{100 * low:.1f}, {100 * high:.1f}]" if percent else f" [{low:.4f}, {high:.4f}]"
    return text


def _metric(entry: dict[str, Any], key: str, percent: bool = False) -> str:
    """``entry[key]`` with its standard error and bootstrap interval when the entry has them."""
    return _fmt(entry.get(key), entry.get(f"{key}_se"), percent, entry.get(f"{key}_ci"))


def read_gap(gap: float) -> str:
    """Plain-words reading of the modality gap ||mean x - mean y|| (0 to 2 on the sphere).

    >>> read_gap(0.8)
    'large: modalities occupy separate cones'
    """
    if gap < 0.1:
        return "small: the modalities share one region"
    if gap < 0.4:
        return "moderate: the modalities overlap only in part"
    return "large: modalities occupy separate cones"


def read_cone(cone: float) -> str:
    """Reading of the cone effect (mean cosine between distinct rows of one modality)."""
    if cone > 0.5:
        return "narrow cone: rows crowd around one direction"
    if cone > 0.15:
        return "moderate cone: rows share a common direction"
    return "wide: rows spread over the sphere"


def read_uniformity(u: float, t: float) -> str:
    """Reading of Wang & Isola uniformity; -2t is the value of an orthonormal set, the floor
    that well spread high-dimensional embeddings approach."""
    floor = -2 * t
    if u < 0.75 * floor:
        return f"near-uniform (best possible about {floor:g})"
    if u < 0.4 * floor:
        return f"partly spread (best possible about {floor:g})"
    return "concentrated: rows use a small part of the sphere"


def read_alignment(a: float) -> str:
    """Reading of alignment ||x - y||^2 over true pairs (2 - 2 cos for alpha = 2)."""
    if a < 0.5:
        return "true pairs lie close together"
    if a < 1.2:
        return "true pairs are only loosely aligned"
    return "true pairs are far apart: weak alignment"


def read_cosines(paired: float | None, unpaired: float | None) -> str:
    if paired is None or unpaired is None:
        return ""
    margin = paired - unpaired
    if margin <= 0:
        return "true pairs are no closer than random pairs"
    return f"true pairs are {margin:.3f} more similar than non-pairs"


def retrieval_table(pair: str, entry: dict[str, Any], ks: list[int]) -> Table | None:
    """Recall@K (as percentages), mAP and the query counts, one row a direction."""
    recall = entry.get("recall")
    if not recall:
        return None
    table = Table(
        title=f"[bold]{pair}[/bold] retrieval (hit rate: any positive in the top K)",
        title_justify="left",
    )
    table.add_column("direction", style="cyan", no_wrap=True)
    for k in ks:
        table.add_column(f"R@{k}", justify="right", no_wrap=True)
    table.add_column("mAP", justify="right", no_wrap=True)
    table.add_column("queries", justify="right", no_wrap=True)
    table.add_column("relevance", style="dim")
    for direction, r in recall.items():
        src, dst = direction.split("->")
        cells = [_metric(r, f"R@{k}", percent=True) for k in ks]
        cells.append(_metric(r, "mAP", percent=True) if src == dst else "")
        queries = str(r.get("n_queries", 0))
        if r.get("n_skipped"):
            queries += f" (+{r['n_skipped']} left out)"
        relevance = r.get("relevance", "groups") if src == dst else "true pairs"
        table.add_row(direction, *cells, queries, relevance)
    return table


def read_intra_vs_cross(entry: dict[str, Any], k: int) -> str | None:
    """Compare same-modality with cross-modal retrieval, the question behind "Cross the Gap"
    (Mistretta et al. 2025): does the gap make cross-modal search worse?"""
    recall = entry.get("recall", {})
    key = f"R@{k}"
    cross = [r.get(key) for d, r in recall.items() if len(set(d.split("->"))) == 2]
    inner = [r.get(key) for d, r in recall.items() if len(set(d.split("->"))) == 1]
    cross = [c for c in cross if c is not None]
    inner = [c for c in inner if c is not None]
    if not cross or not inner:
        return None
    diff = 100 * (max(inner) - max(cross))
    if abs(diff) < 0.05:
        return f"best intra-modal and best cross-modal {key} are equal"
    word = "above" if diff > 0 else "below"
    basis = {r.get("relevance") for d, r in recall.items() if len(set(d.split("->"))) == 1}
    # Class labels make intra-modal retrieval easier than matching exact pairs; say so.
    caveat = (
        " (intra-modal relevance is by label, cross-modal by true pair)"
        if ("labels" in basis)
        else ""
    )
    return (
        f"best intra-modal {key} is {abs(diff):.1f} points {word} the best cross-modal "
        f"{key}{caveat}"
    )


def pair_table(report: Report, pair: str) -> Table:
    """The scalar metrics of one modality pair (and its two modalities), with readings."""
    data = report.to_dict()
    entry = data["pairs"][pair]
    a, b = pair.split("-")
    t = data["params"]["uniformity_t"]
    table = Table(title=f"[bold]{pair}[/bold]", title_justify="left")
    table.add_column("metric", style="cyan", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("reading", style="dim", ratio=1)
    if "gap" in entry:
        table.add_row("modality gap", _metric(entry, "gap"), read_gap(entry["gap"]))
        table.add_row(
            "centroid cosine",
            _metric(entry, "centroid_cosine"),
            "cosine between the two modalities' mean directions",
        )
        conc = entry["gap_concentration"]
        table.add_row(
            "gap in top 1/10 dims",
            f"{100 * conc['top1']:.0f}%/{100 * conc['top10']:.0f}%",
            "share of the gap carried by its largest coordinates",
        )
    if "paired_cosine" in entry:
        table.add_row(
            "paired cosine",
            _metric(entry, "paired_cosine"),
            read_cosines(entry["paired_cosine"], entry["unpaired_cosine"]),
        )
        table.add_row(
            "unpaired cosine",
            _metric(entry, "unpaired_cosine"),
            f"mean over non-pairs ({entry['n_pairs']} true pairs)",
        )
    if "alignment" in entry:
        table.add_row("alignment", _metric(entry, "alignment"), read_alignment(entry["alignment"]))
    for m in (a, b):
        mod = data["modalities"].get(m, {})
        if "cone" in mod:
            table.add_row(f"cone ({m})", _metric(mod, "cone"), read_cone(mod["cone"]))
        if "uniformity" in mod:
            table.add_row(
                f"uniformity ({m})",
                _metric(mod, "uniformity"),
                read_uniformity(mod["uniformity"], t),
            )
    if "uniformity" in entry:
        table.add_row(
            "uniformity (mean)",
            _metric(entry, "uniformity"),
            "mean of the two; lower is more uniform",
        )
    if "mir" in entry:
        detail = entry["mir_detail"]
        table.add_row(
            "MIR",
            _fmt(entry["mir"]),
            f"log10 of the Fréchet distance {detail['fd']:.4g}; lower integrates better",
        )
    reading = read_intra_vs_cross(entry, data["params"]["k"][0])
    if reading:
        table.add_row("intra vs cross", "", reading)
    _diagnostic_rows(table, data, entry, (a, b))
    return table


def read_separability(accuracy: float) -> str:
    """Reading of the cross-validated accuracy of telling two modalities apart (0.5: chance)."""
    if accuracy > 0.95:
        return "a linear probe tells the modalities apart: they never mix"
    if accuracy > 0.7:
        return "the modalities are mostly separable"
    return "the modalities mix: hard to tell apart"


def _diagnostic_rows(
    table: Table, data: dict[str, Any], entry: dict[str, Any], modalities: tuple[str, str]
) -> None:
    for m in modalities:
        mod = data["modalities"].get(m, {})
        if mod.get("effective_rank") is not None:
            table.add_row(
                f"effective rank ({m})",
                f"{mod['effective_rank']:.1f}",
                f"{100 * mod['effective_rank_ratio']:.0f}% of the dimensions in use; "
                f"top component holds {100 * mod['variance_top1']:.0f}% of variance",
            )
    if entry.get("separability") is not None:
        table.add_row(
            "separability", _metric(entry, "separability"), read_separability(entry["separability"])
        )
    if entry.get("cka") is not None:
        table.add_row(
            "linear CKA",
            _fmt(entry["cka"]),
            "similarity of the two modalities' geometry over true pairs (1 = same)",
        )
    sim = entry.get("similarity") or {}
    if sim.get("auc") is not None:
        table.add_row(
            "pair AUC",
            _fmt(sim["auc"]),
            f"chance a true pair outscores a non-pair; histogram overlap {sim['overlap']:.3f}",
        )
    direction = entry.get("gap_direction") or {}
    if direction.get("pc_top10_share") is not None:
        table.add_row(
            "gap in top 10 PCs",
            f"{100 * direction['pc_top10_share']:.0f}%",
            f"share of the gap along the main content directions (chance "
            f"{100 * direction['pc_top10_chance']:.0f}%)",
        )


def whatif_table(pair: str, entry: dict[str, Any], k: int) -> Table | None:
    """What closing the gap after training would change: one row a scenario."""
    whatif = entry.get("whatif")
    if not whatif:
        return None
    a, b = pair.split("-")
    key = f"R@{k}"
    table = Table(
        title=f"[bold]{pair}[/bold] what-ifs: close the gap after training", title_justify="left"
    )
    table.add_column("scenario", style="cyan", no_wrap=True)
    table.add_column("gap", justify="right")
    for direction in (f"{a}->{b}", f"{b}->{a}", f"{a}->{a}", f"{b}->{b}"):
        table.add_column(f"{direction}\n{key}", justify="right")
    table.add_column(f"uniformity\n{a}/{b}", justify="right")
    labels = {"original": "as is", "centered": "mean-centred"}
    for scenario, values in whatif.items():
        recall = values.get("recall", {})
        uni = values.get("uniformity", {})
        label = labels.get(scenario, scenario.replace("shift_", "shifted ") + " x gap")
        table.add_row(
            label,
            _fmt(values.get("gap")),
            *[
                _fmt(recall.get(d, {}).get(key), percent=True)
                for d in (f"{a}->{b}", f"{b}->{a}", f"{a}->{a}", f"{b}->{b}")
            ],
            "/".join("n/a" if uni.get(m) is None else f"{uni[m]:.2f}" for m in (a, b)),
        )
    return table


def render_report(report: Report, console: Console | None = None) -> None:
    """Print the report: a header, one table a modality pair, then the notes."""
    console = console or Console()
    data = report.to_dict()
    inp = data["input"]
    sizes = ", ".join(f"{m} {v['n']}x{v['dim']}" for m, v in inp["modalities"].items())
    header = Text.assemble(
        ("gapscope ", "bold"),
        (data["gapscope_version"], "dim"),
        "  ",
        (inp["source"], "bold"),
        f"  ({sizes})",
    )
    console.print(header)
    model = inp.get("model")
    if model:
        name = model.get("model") or model.get("name") or model.get("family") or "encoder"
        weights = model.get("pretrained") or model.get("checkpoint")
        family = model.get("family")
        detail = ", ".join(str(v) for v in (family, weights) if v and v != name)
        console.print(Text(f"model: {name}" + (f" ({detail})" if detail else ""), style="dim"))
    for pair, entry in data["pairs"].items():
        console.print(pair_table(report, pair))
        retrieval = retrieval_table(pair, entry, data["params"]["k"])
        if retrieval is not None:
            console.print(retrieval)
        whatif = whatif_table(pair, entry, data["params"]["k"][0])
        if whatif is not None:
            console.print(whatif)
    for name, values in data.get("tuples", {}).items():
        if values.get("gram_volume_mean") is not None:
            console.print(
                Text.assemble(
                    (f"{name} GRAM volume ", "cyan"),
                    f"{values['gram_volume_mean']:.4f}",
                    (
                        " (mean over tuples; 0 = the modalities of a tuple coincide,"
                        " lower is better)",
                        "dim",
                    ),
                )
            )
    for note in data["notes"]:
        console.print(Text(f"note: {note}", style="yellow"))
