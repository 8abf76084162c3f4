"""The run's HTML report: static and self-contained (inline SVG and CSS, no scripts, no network), so it opens
offline in any browser and can be mailed as one file. It reads only the published marts: it shows exactly
what BI tools see.

Sections: headline figures, Pareto curve, whale curve, ABC-XYZ heatmap, cohort retention heatmap, CRR trend,
loyalty ladder, key clients and dependency warnings, the unprofitable-client audit with the what-if, clients at
risk, segments with their teams.
"""

from __future__ import annotations

import datetime as dt
import html
import os
from pathlib import Path

import polars as pl

from transforms.behaviour import LADDER
from transforms.marts import MARTS
from warehouse.publish import read_mart

W, H, PAD, LEFT = 660, 260, 40, 90
BLUE, RED, GREY, GREEN = "#2b6cb0", "#c53030", "#a0aec0", "#2f855a"


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _client_name(value: object) -> str:
    """A client's name, or a grey dash where the marts have none (a bank payer whose names carry no company legal
    form: identity.bank_names)."""
    if value is None:
        return ('<span class="none" title="no company name on record (a payer\'s name without a company legal '
                'form is left out: identity.bank_names)">—</span>')
    return _esc(value)


def _money(value: object) -> str:
    return "" if value is None else f"{float(value):,.0f}"


def _pct(value: object) -> str:
    return "" if value is None else f"{float(value):.0%}"


def _line_chart(series: list[tuple[str, list[tuple[float, float]], str]], *, label: str, y_max: float | None = None,
                y_min: float = 0.0, marks: list[tuple[float, float, str]] = (), x_label: str = "",
                y_format=_pct) -> str:
    """Polylines on a shared scale; ``series`` = (name, [(x, y)], colour), x and y as floats."""
    xs = [x for _, points, _ in series for x, _ in points] or [0.0, 1.0]
    ys = [y for _, points, _ in series for _, y in points] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    top = y_max if y_max is not None else max(ys + [y_min + 1e-9])
    bottom = min(ys + [y_min])

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - PAD)

    def sy(y: float) -> float:
        return H - PAD - (y - bottom) / ((top - bottom) or 1) * (H - 2 * PAD)

    parts = [f'<svg role="img" aria-label="{_esc(label)}" width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
             f'<line x1="{LEFT}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="{GREY}"/>',
             f'<line x1="{LEFT}" y1="{PAD}" x2="{LEFT}" y2="{H - PAD}" stroke="{GREY}"/>',
             f'<text x="{LEFT - 4}" y="{sy(top) + 4:.1f}" text-anchor="end" font-size="10">{y_format(top)}</text>',
             f'<text x="{LEFT - 4}" y="{sy(bottom) + 4:.1f}" text-anchor="end" font-size="10">{y_format(bottom)}</text>',
             f'<text x="{W - PAD}" y="{H - PAD + 16}" text-anchor="end" font-size="10">{_esc(x_label)}</text>']
    if bottom < 0 < top:
        parts.append(f'<line x1="{LEFT}" y1="{sy(0):.1f}" x2="{W - PAD}" y2="{sy(0):.1f}" stroke="{GREY}" '
                     'stroke-dasharray="3,3"/>')
    for name, points, colour in series:
        if points:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}">'
                         f"<title>{_esc(name)}</title></polyline>")
    for x, y, text in marks:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{RED}"/>'
                     f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}" font-size="11">{_esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _heatmap(rows: list[str], cols: list[str], values: dict[tuple[str, str], tuple[float, str]], *,
             label: str, cell: int = 34) -> str:
    """A grid: values[(row, col)] = (intensity 0..1, text)."""
    width, height = 90 + cell * len(cols), 30 + cell * len(rows)
    parts = [f'<svg role="img" aria-label="{_esc(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for j, col in enumerate(cols):
        parts.append(f'<text x="{90 + j * cell + cell / 2}" y="18" text-anchor="middle" font-size="10">'
                     f"{_esc(col)}</text>")
    for i, row in enumerate(rows):
        parts.append(f'<text x="84" y="{30 + i * cell + cell / 2 + 4}" text-anchor="end" font-size="10">'
                     f"{_esc(row)}</text>")
        for j, col in enumerate(cols):
            intensity, text = values.get((row, col), (0.0, ""))
            alpha = 0.08 + 0.92 * max(0.0, min(1.0, intensity))
            parts.append(f'<rect x="{90 + j * cell}" y="{30 + i * cell}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill="{BLUE}" fill-opacity="{alpha:.2f}"><title>{_esc(row)} / {_esc(col)}: '
                         f"{_esc(text)}</title></rect>"
                         f'<text x="{90 + j * cell + cell / 2 - 1}" y="{30 + i * cell + cell / 2 + 3}" '
                         f'text-anchor="middle" font-size="9" fill="{"#fff" if alpha > 0.55 else "#000"}">'
                         f"{_esc(text)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _bars(items: list[tuple[str, float]], *, label: str, colour: str = BLUE) -> str:
    if not items:
        return "<p>Nothing yet.</p>"
    top = max(v for _, v in items) or 1.0
    height = 24 * len(items) + 10
    parts = [f'<svg role="img" aria-label="{_esc(label)}" width="{W}" height="{height}" viewBox="0 0 {W} {height}">']
    for i, (name, value) in enumerate(items):
        length = value / top * (W - 220)
        parts.append(f'<text x="150" y="{i * 24 + 18}" text-anchor="end" font-size="11">{_esc(name)}</text>'
                     f'<rect x="156" y="{i * 24 + 6}" width="{max(length, 1):.1f}" height="16" fill="{colour}">'
                     f"<title>{_esc(name)}: {value:,.0f}</title></rect>"
                     f'<text x="{160 + length:.1f}" y="{i * 24 + 18}" font-size="11">{value:,.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(frame: pl.DataFrame, columns: dict[str, tuple[str, object]], *, empty: str = "None.") -> str:
    """columns: {column: (header, formatter)}."""
    if frame.is_empty():
        return f"<p>{_esc(empty)}</p>"
    head = "".join(f"<th>{_esc(h)}</th>" for h, _ in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(row[c]) if fmt else _esc(row[c])}</td>" for c, (_, fmt) in columns.items())
        + "</tr>" for row in frame.iter_rows(named=True))
    return f"<table><tr>{head}</tr>{body}</table>"


def render(marts_dir: Path, as_of: dt.date, currency: str, data_docs: dict[str, str] | None = None) -> str:
    """The report's HTML; ``data_docs`` maps a gate to the (relative) link of its GX Data Docs."""
    # only the marts it shows: client_month alone (a row per client and month) is most of a big history's marts
    shown = ("client_scorecard", "pareto_summary", "whale_curve", "abc_xyz_matrix", "cohort_retention",
             "retention_period", "ladder_transitions", "key_clients", "dependency", "unprofitable_audit",
             "phase_out_scenarios", "segments")
    published = {mart.NAME: read_mart(marts_dir, mart) for mart in MARTS if mart.NAME in shown}
    card, pareto, whale, matrix, cohorts, retention, ladder, key, dependency, audit, scenarios, segments = (
        published[name] for name in shown)
    sections: list[str] = []

    revenue = pareto.filter(pl.col("measure") == "revenue").to_dicts()[0] if pareto.height else {}
    yearly = retention.filter(pl.col("period_type") == "year").sort("period_start") if retention.height else retention
    crr_year = yearly["crr"].to_list()[-1] if yearly.height else None
    kpis = [
        (f"{card.filter(pl.col('net_revenue') > 0).height}", "paying clients in the window"),
        (f"{_money(card['net_revenue'].sum() if card.height else 0)} {currency}", "net revenue"),
        (f"{_money(card['net_profit'].sum() if card.height else 0)} {currency}", "net profit"),
        (f"{card.filter(pl.col('is_unprofitable')).height if card.height else 0}", "unprofitable clients"),
        (f"{card.filter(pl.col('is_at_risk')).height if card.height else 0}", "clients at risk"),
        (_pct(revenue.get("top_share")), f"revenue from the top {revenue.get('top_fraction', 0.2):.0%} of clients"),
        (f"{revenue.get('gini', 0) or 0:.2f}", "Gini of revenue"),
        ("" if crr_year is None else f"{crr_year:.0f}%", "CRR, last full year"),
    ]
    sections.append('<div class="kpis">' + "".join(f'<div class="kpi"><b>{_esc(v)}</b>{_esc(t)}</div>'
                                                   for v, t in kpis) + "</div>")

    if card.height:
        ranked = card.sort("revenue_rank")
        n = ranked.height
        points = [(0.0, 0.0)] + [(i / n, s) for i, s in enumerate(ranked["revenue_cumulative_share"].to_list(), 1)]
        reach = revenue.get("reach") or 0.8
        k = next((i for i, (_, s) in enumerate(points) if s >= reach), None)
        marks = ([(points[k][0], points[k][1], f"{reach:.0%} of revenue from {points[k][0]:.0%} of clients")]
                 if k else [])
        sections.append("<h2>Pareto curve: how few clients bring most of the revenue</h2>"
                        + _line_chart([("cumulative share of revenue", points, BLUE)], label="Pareto curve",
                                      y_max=1.0, marks=marks, x_label="share of clients, largest first"))
    if whale.height:
        peak = whale.filter(pl.col("is_peak")).to_dicts()
        points = [(0.0, 0.0)] + [(r, float(p)) for r, p in zip(whale["cumulative_client_share"].to_list(),
                                                                whale["cumulative_profit"].to_list(), strict=True)]
        marks = [(peak[0]["cumulative_client_share"], float(peak[0]["cumulative_profit"]),
                  f"peak {_money(peak[0]['cumulative_profit'])} {currency}")] if peak else []
        sections.append("<h2>Whale curve: cumulative profit by client rank</h2>"
                        + _line_chart([("cumulative profit", points, GREEN)], label="Whale curve", marks=marks,
                                      y_min=min(0.0, min(p for _, p in points)), x_label="share of clients, most "
                                      "profitable first", y_format=_money))
    if matrix.height:
        top = float(matrix["net_revenue"].cast(pl.Float64).max() or 1)
        values = {(r["abc"], r["xyz"]): (float(r["net_revenue"]) / top if top else 0,
                                         f"{r['clients']}") for r in matrix.iter_rows(named=True)}
        sections.append("<h2>ABC-XYZ: size against regularity (clients per cell, shade = revenue)</h2>"
                        + _heatmap(["A", "B", "C"], ["X", "Y", "Z"], values, label="ABC-XYZ heatmap", cell=60))
    if cohorts.height:
        recent = cohorts.filter(pl.col("cohort_month") >= pl.col("cohort_month").max().dt.offset_by("-17mo"))
        recent = recent.filter(pl.col("months_since") <= 12)
        rows = [d.isoformat()[:7] for d in sorted(recent["cohort_month"].unique().to_list())]
        values = {(r["cohort_month"].isoformat()[:7], str(r["months_since"])): (r["retention_rate"],
                                                                                 _pct(r["retention_rate"]))
                  for r in recent.iter_rows(named=True)}
        sections.append("<h2>Cohort retention: share of each first-purchase cohort buying N months later</h2>"
                        + _heatmap(rows, [str(i) for i in range(13)], values, label="Cohort retention heatmap"))
    monthly = retention.filter(pl.col("period_type") == "month").sort("period_start") if retention.height else retention
    if monthly.height:
        xs = list(range(monthly.height))
        crr = [(x, (v or 0) / 100) for x, v in zip(xs, monthly["crr"].to_list(), strict=True)]
        churn = [(x, v or 0) for x, v in zip(xs, monthly["churn_rate"].to_list(), strict=True)]
        sections.append("<h2>Customer retention rate (CRR) and churn, month by month</h2>"
                        + _line_chart([("CRR", crr, BLUE), ("churn rate", churn, RED)], label="CRR trend",
                                      x_label=f"{monthly['period_start'][0]} .. {monthly['period_start'][-1]}"))
    if ladder.height:
        last = ladder.filter(pl.col("month") == pl.col("month").max())
        steps = [*LADDER, "lost"]
        totals = dict(last.select("to_step", "step_total").unique().iter_rows())
        moves = last.filter(pl.col("from_step") != pl.col("to_step")).sort("clients", descending=True)
        sections.append("<h2>Loyalty ladder: clients per step, and last month's moves</h2>"
                        + _bars([(s, float(totals.get(s, 0))) for s in steps], label="Loyalty ladder")
                        + _table(moves.head(12), {"from_step": ("from", None), "to_step": ("to", None),
                                                  "clients": ("clients", None)}, empty="No moves last month."))
    if dependency.height:
        warn = dependency.filter(pl.col("dependency_level") != "ok").sort("top_client_share", descending=True)
        sections.append("<h2>Key clients and dependency</h2>"
                        + _table(key.filter(pl.col("level") == "company").head(15),
                                 {"client_id": ("client", None), "name": ("name", _client_name),
                                  "net_revenue": (f"net revenue {currency}", _money), "unit_share": ("share", _pct),
                                  "reasons": ("why key", None)})
                        + "<h3>Dependency warnings</h3>"
                        + _table(warn, {"level": ("level", None), "unit": ("unit", None),
                                        "top_client_id": ("top client", None), "top_client_share": ("share", _pct),
                                        "dependency_level": ("calls for", None)}, empty="No unit depends on one client."))
    sections.append("<h2>Unprofitable clients and what phasing them out would do</h2>"
                    + _table(audit.head(15), {"client_id": ("client", None), "name": ("name", _client_name),
                                              "net_revenue": (f"net revenue {currency}", _money),
                                              "net_profit": (f"net profit {currency}", _money),
                                              "main_reason": ("main reason", None),
                                              "hours_spent": ("hours", lambda v: f"{v:,.0f}")},
                             empty="No client loses money.")
                    + _table(scenarios, {"scenario": ("what if", None), "clients_dropped": ("clients", None),
                                         "revenue_lost": (f"revenue lost {currency}", _money),
                                         "profit_change": (f"profit change {currency}", _money),
                                         "hours_freed": ("hours freed", lambda v: f"{v:,.0f}"),
                                         "revenue_at_risk_short_term": (f"revenue at risk at once {currency}", _money),
                                         "top1_share_after": ("largest client's share after", _pct)}))
    if card.height:
        at_risk = card.filter(pl.col("is_at_risk")).sort("net_revenue", descending=True)
        sections.append("<h2>Clients slipping away (silent much longer than usual)</h2>"
                        + _table(at_risk.head(15), {"client_id": ("client", None), "name": ("name", _client_name),
                                                    "net_revenue": (f"net revenue {currency}", _money),
                                                    "days_since_last_payment": ("days silent", None),
                                                    "usual_gap_days": ("usual gap (days)", lambda v: f"{v:.0f}"),
                                                    "manager_id": ("manager", None)},
                                 empty="Nobody is silent beyond their usual rhythm."))
    if segments.height:
        sections.append("<h2>Segments and the team that owns each</h2>"
                        + _table(segments, {"priority": ("#", None), "segment_name": ("segment", None),
                                            "team": ("team", None), "clients": ("clients", None),
                                            "net_revenue": (f"net revenue {currency}", _money),
                                            "net_profit": (f"net profit {currency}", _money)}))
    if data_docs:
        links = " · ".join(f'<a href="{_esc(href)}">{_esc(gate)} gate</a>' for gate, href in data_docs.items())
        sections.append("<h2>Data quality checks of the last run</h2>"
                        f"<p>Great Expectations Data Docs: {links}.</p>")
    style = ("body{font:14px system-ui,sans-serif;margin:2rem;max-width:70rem;color:#1a202c}"
             "h2{margin-top:2.2rem;font-size:1.15rem}table{border-collapse:collapse;margin:.5rem 0}"
             "td,th{padding:.25rem .6rem;border-bottom:1px solid #e2e8f0;text-align:left}"
             ".kpis{display:flex;flex-wrap:wrap;gap:1rem}.kpi{min-width:10rem;background:#f7fafc;padding:.6rem}"
             ".kpi b{display:block;font-size:1.4rem}.none{color:#a0aec0}")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>clientbase report '
            f"{as_of.isoformat()}</title><style>{style}</style></head><body>"
            f"<h1>Client base as of {as_of.isoformat()}</h1>{''.join(sections)}</body></html>")


def write_report(marts_dir: Path, reports_dir: Path, as_of: dt.date, currency: str,
                 data_docs_dir: Path | None = None) -> Path:
    out = reports_dir / as_of.isoformat() / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    docs = {}
    if data_docs_dir is not None:  # relative links: the reports folder can be copied or served as a whole
        docs = {gate: Path(os.path.relpath(data_docs_dir / gate / "index.html", out.parent)).as_posix()
                for gate in ("raw", "staged", "marts") if (data_docs_dir / gate / "index.html").is_file()}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(render(marts_dir, as_of, currency, docs), encoding="utf-8")
    tmp.replace(out)
    return out
