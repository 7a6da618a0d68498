#!/usr/bin/env python3
"""Writes docker/grafana/dashboards/ceo-overview.json from docs/analytics.md.

Each panel's SQL is a question of the analysts' guide with Grafana's variables put in: the tenant
literal becomes ${tenant}, the date range becomes $__timeFilter(column). tests/analytics.rs undoes
exactly that and requires the doc's query back, then runs it: the panels run tested SQL.

    python3 scripts/grafana-dashboard.py
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs/analytics.md").read_text()
RANGE = re.compile(r"(\w+) >= '2026-02-23 00:00:00' AND \1 < '2026-03-09 00:00:00'")

def questions():
    out, title, lines = {}, "", iter(DOC.splitlines())
    for line in lines:
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.strip() == "```sql":
            sql = []
            for l in lines:
                if l.strip() == "```":
                    break
                sql.append(l)
            n = len(out) + 1
            out[n] = (title, "\n".join(sql))
    return out

def grafana_sql(sql):
    sql = sql.replace("tenant_id = 42", "tenant_id = ${tenant}")
    return RANGE.sub(lambda m: f"$__timeFilter({m.group(1)})", sql)

DS = {"type": "grafana-clickhouse-datasource", "uid": "vigia-clickhouse"}
# (question, panel type, format: 0 = time series, 1 = table, grid position)
PANELS = [
    (8, "timeseries", 0, {"h": 9, "w": 24, "x": 0, "y": 0}),
    (12, "table", 1, {"h": 8, "w": 12, "x": 0, "y": 9}),
    (1, "table", 1, {"h": 8, "w": 12, "x": 12, "y": 9}),
    (2, "barchart", 1, {"h": 8, "w": 12, "x": 0, "y": 17}),
    (10, "piechart", 1, {"h": 8, "w": 12, "x": 12, "y": 17}),
    (16, "table", 1, {"h": 8, "w": 12, "x": 0, "y": 25}),
    (17, "table", 1, {"h": 8, "w": 12, "x": 12, "y": 25}),
]

qs = questions()
panels = []
for i, (n, kind, fmt, pos) in enumerate(PANELS, start=1):
    title, sql = qs[n]
    panels.append({
        "id": i, "type": kind, "title": re.sub(r"^\d+\. ", "", title), "gridPos": pos,
        "datasource": DS,
        "description": f"docs/analytics.md question {n}",
        "targets": [{"refId": "A", "datasource": DS, "editorType": "sql", "format": fmt,
                     "queryType": "timeseries" if fmt == 0 else "table",
                     "rawSql": grafana_sql(sql)}],
    })

dashboard = {
    "uid": "vigia-ceo-overview", "title": "Vigía — CEO overview", "schemaVersion": 39,
    "version": 1, "editable": True, "tags": ["vigia"], "timezone": "browser",
    "time": {"from": "now-7d", "to": "now"}, "refresh": "1m",
    "templating": {"list": [{
        "name": "tenant", "label": "Tenant", "type": "query", "datasource": DS,
        "definition": "SELECT DISTINCT tenant_id FROM vigia.seller_hourly ORDER BY tenant_id",
        "query": "SELECT DISTINCT tenant_id FROM vigia.seller_hourly ORDER BY tenant_id",
        "refresh": 1,
    }]},
    "panels": panels,
}
out = ROOT / "docker/grafana/dashboards/ceo-overview.json"
out.write_text(json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n")
print(f"wrote {out.relative_to(ROOT)} ({len(panels)} panels)")
