"""The run's HTML report: static, self-contained (inline SVG, no scripts or network), opens offline.

It reads only the published marts, so it shows exactly what BI tools see.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import polars as pl


def _bars(series: list[tuple[str, float]], width: int = 760, height: int = 180) -> str:
    if not series:
        return "<p>No revenue yet.</p>"
    top = max(v for _, v in series) or 1.0
    bar = width / len(series)
    rects = []
    for i, (label, value) in enumerate(series):
        h = value / top * (height - 20)
        rects.append(f'<rect x="{i * bar + 1:.1f}" y="{height - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                     f'fill="#2b6cb0"><title>{html.escape(label)}: {value:,.2f}</title></rect>')
    return (f'<svg role="img" aria-label="Monthly revenue" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(rects)}</svg>')


def write_report(marts_dir: Path, reports_dir: Path, as_of: dt.date, currency: str) -> Path:
    client_month = pl.read_parquet(marts_dir / "client_month" / "*.parquet")
    window_start = (as_of.replace(day=1) - dt.timedelta(days=335)).replace(day=1)
    last12 = client_month.filter(pl.col("month") >= window_start)
    by_client = (last12.group_by("client_id").agg(pl.col("net_revenue").sum().cast(pl.Float64).alias("revenue"))
                 .sort(["revenue", "client_id"], descending=[True, False]))
    total = float(by_client["revenue"].sum() or 0)
    monthly = (client_month.group_by("month").agg(pl.col("net_revenue").sum().cast(pl.Float64).alias("v"))
               .sort("month"))
    top = by_client.head(10)
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(r['client_id'])}</td><td class=n>{r['revenue']:,.2f}</td>"
        f"<td class=n>{(r['revenue'] / total if total else 0):.1%}</td></tr>"
        for i, r in enumerate(top.iter_rows(named=True), start=1))
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>clientbase report {as_of.isoformat()}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;max-width:60rem}} .n{{text-align:right}}
table{{border-collapse:collapse}} td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd}}
.kpi{{display:inline-block;margin-right:2rem}} .kpi b{{display:block;font-size:1.6rem}}</style></head><body>
<h1>Client base as of {as_of.isoformat()}</h1>
<div class="kpi"><b>{by_client.height}</b>paying clients, last 12 months</div>
<div class="kpi"><b>{total:,.2f} {html.escape(currency)}</b>net revenue, last 12 months</div>
<h2>Net revenue by month</h2>{_bars([(m.isoformat(), v) for m, v in monthly.iter_rows()])}
<h2>Top clients, last 12 months</h2>
<table><tr><th>#</th><th>client</th><th>net revenue</th><th>share</th></tr>{rows}</table>
</body></html>"""
    out = reports_dir / as_of.isoformat() / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out)
    return out
