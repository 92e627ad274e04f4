#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder (run it after editing; commit both).

Every query uses only metrics switchyard exports (src/telemetry/metrics.rs); tests/obs_metrics.rs
checks that each one appears in a scrape and parses as PromQL.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
R = "[$__rate_interval]"

def var(name, label, metric, lbl):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": f"label_values({metric}, {lbl})", "refId": f"{name}-values"},
            "definition": f"label_values({metric}, {lbl})",
            "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}

def ds_var():
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1}

class D:
    def __init__(s): s.panels = []; s.id = 1; s.x = 0; s.y = 0
    def panel(s, title, targets, unit="short", kind="timeseries", w=12, h=8, desc="", stack=False):
        if s.x + w > 24: s.x = 0; s.y += h
        p = {"id": s.id, "type": kind, "title": title, "description": desc, "datasource": DS,
             "gridPos": {"x": s.x, "y": s.y, "w": w, "h": h},
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
             "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
                         "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else {},
             "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i),
                          **({"instant": True, "format": "table"} if kind in ("table", "bargauge") else {"range": True})}
                         for i, (e, l) in enumerate(targets)]}
        if stack:
            p["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}, "fillOpacity": 30}
        s.panels.append(p); s.id += 1; s.x += w
    def row(s, title):
        s.x = 0; s.y += 8
        s.panels.append({"id": s.id, "type": "row", "title": title, "collapsed": False,
                         "gridPos": {"x": 0, "y": s.y, "w": 24, "h": 1}, "panels": []})
        s.id += 1; s.y += 1

def dash(uid, title, desc, d, variables):
    return {"uid": uid, "title": title, "description": desc, "tags": ["switchyard", "llm"],
            "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
            "graphTooltip": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": [ds_var()] + variables}, "annotations": {"list": []},
            "links": [{"title": "switchyard", "type": "dashboards", "tags": ["switchyard"], "asDropdown": True}],
            "panels": d.panels}

def q(p, m, sel, by="le"):
    sel = f"{{{sel}}}" if sel else ""
    return f"histogram_quantile({p}, sum by ({by}) (rate({m}_bucket{sel}{R})))"

# Overview
d = D()
sel = 'route=~"$route", key_team=~"$team"'
d.panel("Requests per second by route", [(f'sum by (route) (rate(switchyard_requests_total{{{sel}}}{R}))', "{{route}}")], "reqps", stack=True)
d.panel("Responses by status class", [(f'sum by (status_class) (rate(switchyard_requests_total{{{sel}}}{R}))', "{{status_class}}")], "reqps", stack=True)
d.panel("Error ratio (5xx)", [(f'sum(rate(switchyard_requests_total{{{sel}, status_class="5xx"}}{R})) / sum(rate(switchyard_requests_total{{{sel}}}{R}))', "5xx"),
                              (f'sum(rate(switchyard_requests_total{{{sel}, status_class="4xx"}}{R})) / sum(rate(switchyard_requests_total{{{sel}}}{R}))', "4xx")], "percentunit",
        desc="Share of requests answered with an error. A stream that failed mid-way counts as 5xx; a caller that hung up as 4xx (499).")
d.panel("Request duration (end of stream included)", [(q(p, "switchyard_request_duration_seconds", 'route=~"$route"'), f"p{int(p*100)}") for p in (0.5, 0.95, 0.99)], "s")
d.panel("Time to first token (streams)", [(q(p, "switchyard_time_to_first_token_seconds", 'route=~"$route"'), f"p{int(p*100)}") for p in (0.5, 0.95, 0.99)], "s")
d.panel("Overhead inside switchyard (upstream excluded)", [(q(p, "switchyard_overhead_seconds", ""), f"p{int(p*100)}") for p in (0.5, 0.99)], "s",
        desc="Budget: p50 <= 50us, p99 <= 250us.")
d.panel("Tokens per second by type", [(f'sum by (type) (rate(switchyard_tokens_total{{{sel}}}{R}))', "{{type}}")], "short")
d.panel("Spend per hour (USD)", [(f'sum by (route) (rate(switchyard_cost_usd_total{{{sel}}}{R})) * 3600', "{{route}}")], "currencyUSD", stack=True)
d.panel("In flight (open streams included)", [("sum(switchyard_inflight)", "in flight")], "short", w=8)
d.panel("Rate-limit rejections", [(f'sum by (key_team) (rate(switchyard_ratelimit_rejections_total{{key_team=~"$team"}}{R}))', "{{key_team}}")], "reqps", w=8)
d.panel("Upstream attempts per request", [(f'sum(rate(switchyard_upstream_attempts_total{R})) / sum(rate(switchyard_requests_total{{provider!="none"}}{R}))', "attempts/request")], "short", w=8,
        desc="Above 1: fallbacks and retries are happening.")
d.row("Process")
d.panel("Versions running", [("count by (version) (switchyard_build_info)", "{{version}}")], "short", w=8)
d.panel("Config reloads", [("sum by (result) (increase(switchyard_config_reload_total[1h]))", "{{result}}")], "short", w=8)
d.panel("Trace spans dropped", [(f"sum by (reason) (rate(switchyard_trace_spans_dropped_total{R}))", "{{reason}}")], "short", w=8,
        desc="Non-zero: the OTLP collector is slow or unreachable. Requests are never slowed by it.")
overview = dash("switchyard-overview", "switchyard / overview",
                "Traffic, errors, latency, time to first token, tokens and spend across all routes.", d,
                [var("route", "Route", "switchyard_requests_total", "route"), var("team", "Team", "switchyard_requests_total", "key_team")])

# Providers
d = D()
ps = 'provider=~"$provider"'
d.panel("Attempts by outcome", [(f'sum by (provider, outcome) (rate(switchyard_upstream_attempts_total{{{ps}}}{R}))', "{{provider}} {{outcome}}")], "reqps", stack=True)
d.panel("Attempt failure ratio", [(f'sum by (provider) (rate(switchyard_upstream_attempts_total{{{ps}, outcome!="ok"}}{R})) / sum by (provider) (rate(switchyard_upstream_attempts_total{{{ps}}}{R}))', "{{provider}}")], "percentunit")
d.panel("Attempt latency to reply head, p95", [(q(0.95, "switchyard_upstream_attempt_duration_seconds", ps, "le, provider"), "{{provider}}")], "s")
d.panel("Circuit state (0 closed, 1 half-open, 2 open)", [(f'max by (provider) (switchyard_circuit_state{{{ps}}})', "{{provider}}")], "short")
d.panel("Requests served by model", [(f'sum by (provider, model) (rate(switchyard_requests_total{{{ps}}}{R}))', "{{provider}}/{{model}}")], "reqps", stack=True)
d.panel("Request duration p95 by model", [(q(0.95, "switchyard_request_duration_seconds", ps, "le, provider, model"), "{{provider}}/{{model}}")], "s")
d.panel("Time to first token p95 by model", [(q(0.95, "switchyard_time_to_first_token_seconds", ps, "le, provider, model"), "{{provider}}/{{model}}")], "s")
d.panel("Output tokens per second by model", [(f'sum by (provider, model) (rate(switchyard_tokens_total{{{ps}, type="output"}}{R}))', "{{provider}}/{{model}}")], "short")
d.panel("Prompt-cache hit ratio", [(f'sum by (provider) (rate(switchyard_tokens_total{{{ps}, type="cached"}}{R})) / sum by (provider) (rate(switchyard_tokens_total{{{ps}, type="input"}}{R}))', "{{provider}}")], "percentunit")
d.panel("Spend per hour by model (USD)", [(f'sum by (provider, model) (rate(switchyard_cost_usd_total{{{ps}}}{R})) * 3600', "{{provider}}/{{model}}")], "currencyUSD", stack=True)
providers = dash("switchyard-providers", "switchyard / providers",
                 "Per upstream provider: attempts and their outcomes, latency, circuit state, models served.", d,
                 [var("provider", "Provider", "switchyard_upstream_attempts_total", "provider")])

# Cost per team
d = D()
ts = 'key_team=~"$team"'
d.panel("Spend per hour by team (USD)", [(f'sum by (key_team) (rate(switchyard_cost_usd_total{{{ts}}}{R})) * 3600', "{{key_team}}")], "currencyUSD", stack=True)
d.panel("Spend over the time range by team (USD)", [(f'sum by (key_team) (increase(switchyard_cost_usd_total{{{ts}}}[$__range]))', "{{key_team}}")], "currencyUSD", kind="bargauge")
d.panel("Spend over the time range by team and model (USD)", [(f'sum by (key_team, provider, model) (increase(switchyard_cost_usd_total{{{ts}}}[$__range]))', "")], "currencyUSD", kind="table")
d.panel("Budget remaining (USD)", [('min by (scope, name) (switchyard_budget_remaining_usd)', "{{scope}} {{name}}")], "currencyUSD")
d.panel("Tokens per second by team and type", [(f'sum by (key_team, type) (rate(switchyard_tokens_total{{{ts}}}{R}))', "{{key_team}} {{type}}")], "short")
d.panel("Requests per second by team and status", [(f'sum by (key_team, status_class) (rate(switchyard_requests_total{{{ts}}}{R}))', "{{key_team}} {{status_class}}")], "reqps", stack=True)
d.panel("Rate-limit rejections by team", [(f'sum by (key_team) (rate(switchyard_ratelimit_rejections_total{{{ts}}}{R}))', "{{key_team}}")], "reqps")
d.panel("Average cost per request by team (USD)", [(f'sum by (key_team) (rate(switchyard_cost_usd_total{{{ts}}}{R})) / sum by (key_team) (rate(switchyard_requests_total{{{ts}}}{R}))', "{{key_team}}")], "currencyUSD")
cost = dash("switchyard-cost", "switchyard / cost per team",
            "Spend, tokens and budgets per caller team, priced at switchyard's pricing table.", d,
            [var("team", "Team", "switchyard_requests_total", "key_team")])

for name, dsh in [("overview", overview), ("providers", providers), ("cost", cost)]:
    with open(os.path.join(HERE, f"switchyard-{name}.json"), "w") as f:
        json.dump(dsh, f, indent=2); f.write("\n")
