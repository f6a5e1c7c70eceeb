"""Assembling the showdown for the API: manifests + the latest benchmark run."""

from __future__ import annotations

import logging
from typing import Literal

from slimbert.errors import NotFound
from slimbert.records import Showdown
from slimbert.report.figures import CHARTS, chart
from slimbert.report.render import to_csv, to_html, to_markdown
from slimbert.report.showdown import autotune_summary, build_showdown, cpu_pick, latest_benchmark_run
from slimbert.store.manifest import VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)


def cpu_recommendation(store: VariantStore, family: str, manifests: list[VariantManifest]) -> str | None:
    """The showdown's CPU pick from the family's latest benchmark run, or None without one: the pick stored
    with the run, else (a run saved before runs carried it) the showdown built from it. The serving
    catalog caches it until the family's variants or runs change."""
    raw = store.latest_report(family)
    if raw is None:
        return None
    stored = raw.get("recommended_cpu")
    return str(stored) if stored is not None else cpu_pick(family, manifests, raw)


def showdown(store: VariantStore, family: str | None, batch_size: int, gate: float) -> Showdown:
    fam = family or store.newest_family()
    manifests = store.manifests(fam)
    if not manifests:
        raise NotFound(f"family {fam} has no variants", hint=f"families: {', '.join(store.families())}")
    report = build_showdown(fam, manifests, latest_benchmark_run(store, fam), batch_size=batch_size, gate=gate)
    report.autotune = autotune_summary(store.latest_report(fam, kind="autotune"))
    return report


def render(report: Showdown, store: VariantStore, fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(report)
    if fmt == "csv":
        return to_csv(report)
    manifests = store.manifests(report.family)
    svgs: dict[str, str] = {}
    for name in CHARTS:
        data = chart(name, report, manifests, "svg")
        if data is not None:
            # Inline SVG: drop the XML prolog, which is not allowed inside HTML.
            text = data.decode()
            svgs[name] = text[text.find("<svg"):]
    return to_html(report, svgs)


def chart_bytes(store: VariantStore, family: str | None, name: str, fmt: Literal["svg", "png"],
                batch_size: int, gate: float) -> bytes:
    report = showdown(store, family, batch_size, gate)
    data = chart(name, report, store.manifests(report.family), fmt)
    if data is None:
        raise NotFound(f"no data for the {name} chart of {report.family} yet",
                       hint="run POST /jobs/benchmark (and a layer-sensitivity stage for 'sensitivity')")
    return data
