#!/usr/bin/env python3
"""Generates deploy/grafana/dsrlb.json (run from anywhere; rewrites the file). Edit here, not
in the JSON: the panels, their queries and their descriptions. Every metric name used must be
one a live node exports; the lab test product_dashboards checks the generated file."""
import json
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
J = 'job=~"$job"'
JI = 'job=~"$job",instance=~"$instance"'
JF = 'job=~"$job",farm=~"$farm"'
panels = []
pid = [0]
y = [0]

def nid():
    pid[0] += 1
    return pid[0]

def row(title):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1

def target(expr, legend, ref, instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t

def panel(kind, title, desc, targets, x, w, h=8, unit=None, extra=None, fieldcfg=None):
    p = {"type": kind, "title": title, "description": desc, "id": nid(), "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y[0]},
         "targets": [target(*t) if isinstance(t, tuple) else t for t in targets],
         "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if fieldcfg:
        p["fieldConfig"]["defaults"].update(fieldcfg)
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
        p["fieldConfig"]["defaults"].setdefault("custom", {"drawStyle": "line", "lineWidth": 1,
                                                          "fillOpacity": 10, "showPoints": "never"})
    if extra:
        p["options"].update(extra)
    panels.append(p)
    return p

def nextrow(h=8):
    y[0] += h

BOOL = {"mappings": [{"type": "value", "options": {
    "0": {"text": "no", "color": "red", "index": 0},
    "1": {"text": "yes", "color": "green", "index": 1}}}],
    "color": {"mode": "thresholds"},
    "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]},
    "min": 0, "max": 1}
OWNER = dict(BOOL)
OWNER = {**BOOL, "mappings": [{"type": "value", "options": {
    "0": {"text": "standby", "color": "transparent", "index": 0},
    "1": {"text": "OWNER", "color": "green", "index": 1}}}],
    "thresholds": {"mode": "absolute", "steps": [{"color": "transparent", "value": None}, {"color": "green", "value": 1}]}}
STATE_TL = {"showValue": "auto", "mergeValues": True, "rowHeight": 0.9, "alignValue": "center",
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"}}

row("Ownership and cluster")
panel("state-timeline", "VIP owner per node",
      "dsrlb_vip_owner: 1 on the node that answers ARP for and forwards the VIPs (a witness exports 0). "
      "Exactly one node should be OWNER at any time.",
      [(f"dsrlb_vip_owner{{{JI}}}", "{{instance}}", "A")], 0, 12, fieldcfg=OWNER, extra=STATE_TL)
panel("stat", "Owners in the cluster",
      "sum(dsrlb_vip_owner): 1 is healthy; 0 = no owner (VIP traffic lost), 2+ = split brain.",
      [(f"sum by (job) (dsrlb_vip_owner{{{J}}})", "{{job}}", "A")], 12, 4,
      fieldcfg={"color": {"mode": "thresholds"}, "thresholds": {"mode": "absolute", "steps": [
          {"color": "red", "value": None}, {"color": "green", "value": 1}, {"color": "red", "value": 2}]}},
      extra={"colorMode": "background", "graphMode": "none", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
panel("timeseries", "Ownership arbiter",
      "dsrlb_vip_owner_arbiter: what grants this node its ownership now: quorum (lease), sole (cluster of one) "
      "or segment (a pair without quorum, pair_arbiter = \"segment\").",
      [(f"dsrlb_vip_owner_arbiter{{{JI}}} == 1", "{{instance}} {{arbiter}}", "A")], 16, 8,
      fieldcfg={"min": 0, "max": 1})
nextrow()
panel("timeseries", "Raft term",
      "dsrlb_raft_term per member (witness included). A step is an election; "
      "dsrlb_raft_leader_changes_total counts the leader changes each member saw.",
      [(f"dsrlb_raft_term{{{JI}}}", "{{instance}}", "A"),
       (f"increase(dsrlb_raft_leader_changes_total{{{JI}}}[$__rate_interval])", "{{instance}} leader changes", "B")],
      0, 8, unit="none")
panel("timeseries", "Takeovers",
      "increase(dsrlb_takeovers_total): times a node became the VIP owner.",
      [(f"increase(dsrlb_takeovers_total{{{JI}}}[$__rate_interval])", "{{instance}}", "A")], 8, 8,
      unit="none", fieldcfg={"custom": {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1, "showPoints": "never"}})
panel("timeseries", "Gratuitous ARP sent",
      "rate(dsrlb_gratuitous_arp_frames_total): takeover bursts and garp_refresh announcements (request and "
      "reply form per VIP and round).",
      [(f"rate(dsrlb_gratuitous_arp_frames_total{{{JI}}}[$__rate_interval])", "{{instance}}", "A")], 16, 8,
      unit="pps")
nextrow()
panel("timeseries", "ARP flux: foreign claims per VIP",
      "rate(dsrlb_vip_conflicts_total): ARP frames claiming a VIP from a MAC that is not a cluster member's "
      "(a backend without arp_ignore/arp_announce, or a stranger). Should be empty; `dsrctl status` names the MACs.",
      [(f"sum by (vip) (rate(dsrlb_vip_conflicts_total{{{J}}}[$__rate_interval]))", "{{vip}}", "A"),
       (f"sum(rate(dsrlb_vip_conflicts_untallied_total{{{J}}}[$__rate_interval]))", "untallied", "B")],
      0, 12, unit="pps")
panel("table", "Builds and datapath",
      "dsrlb_build_info and dsrlb_datapath_info: which build each member runs, and the I/O backend "
      "(af_packet/af_xdp), its mode and whether the tc fast path forwards plain farms.",
      [target(f"dsrlb_build_info{{{J}}}", "", "A", instant=True),
       target(f"dsrlb_datapath_info{{{J}}}", "", "B", instant=True)],
      12, 12,
      extra={"showHeader": True, "cellHeight": "sm"})
panels[-1]["transformations"] = [
    {"id": "merge", "options": {}},
    {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                                   "indexByName": {}, "renameByName": {}}}]
nextrow()

row("Traffic")
panel("timeseries", "Forwarded packets per backend",
      "rate(dsrlb_packets_total): frames forwarded to each backend (workers and tc fast path together; "
      "a GSO frame counts once), summed over the nodes.",
      [(f"sum by (farm, backend) (rate(dsrlb_packets_total{{{JF}}}[$__rate_interval]))", "{{farm}}/{{backend}}", "A")],
      0, 12, unit="pps")
panel("timeseries", "Forwarded bits per backend",
      "rate(dsrlb_bytes_total) × 8, summed over the nodes.",
      [(f"8 * sum by (farm, backend) (rate(dsrlb_bytes_total{{{JF}}}[$__rate_interval]))", "{{farm}}/{{backend}}", "A")],
      12, 12, unit="bps")
nextrow()
panel("timeseries", "New flows per farm",
      "rate(dsrlb_flows_new_total): flows first scheduled on a node.",
      [(f"sum by (farm) (rate(dsrlb_flows_new_total{{{JF}}}[$__rate_interval]))", "{{farm}}", "A")],
      0, 8, unit="ops")
panel("timeseries", "Established flows per backend",
      "dsrlb_backend_flows on the VIP owner: what max_flows limits.",
      [(f"sum by (farm, backend) (dsrlb_backend_flows{{{JF}}} * on (job, instance) group_left () dsrlb_vip_owner{{{J}}})",
        "{{farm}}/{{backend}}", "A")],
      8, 8, unit="none")
panel("timeseries", "Fast path share",
      "rate(dsrlb_fast_path_packets_total) / rate(dsrlb_packets_total) per node: the part forwarded by the "
      "kernel tc program (exported only while it runs).",
      [(f"sum by (instance) (rate(dsrlb_fast_path_packets_total{{{JI}}}[$__rate_interval])) / "
        f"sum by (instance) (rate(dsrlb_packets_total{{{JI}}}[$__rate_interval]))", "{{instance}}", "A")],
      16, 8, unit="percentunit", fieldcfg={"min": 0, "max": 1})
nextrow()
panel("timeseries", "Drops by reason",
      "rate(dsrlb_drops_total) by reason, reasons that are non-zero only. not_owner on standby nodes and "
      "arp_not_for_vip are normal; no_backend, ring_full, tx_error, backend_full are not.",
      [(f"sum by (instance, reason) (rate(dsrlb_drops_total{{{JI}}}[$__rate_interval])) > 0", "{{instance}} {{reason}}", "A")],
      0, 24, unit="pps")
nextrow()

row("Backends")
panel("state-timeline", "Backend up (on the VIP owner)",
      "dsrlb_backend_up as the owner sees it: healthy, MAC known and not off.",
      [(f"max by (farm, backend) (dsrlb_backend_up{{{JF}}} * on (job, instance) group_left () dsrlb_vip_owner{{{J}}})",
        "{{farm}}/{{backend}}", "A")],
      0, 12, h=9, fieldcfg=BOOL, extra=STATE_TL)
panel("table", "Backend state (on the VIP owner)",
      "Why a backend is out: dsrlb_backend_healthy (replicated check verdict), dsrlb_backend_mac_known "
      "(ARP), dsrlb_backend_admin_state (up/drain/off).",
      [target(f"max by (farm, backend) (dsrlb_backend_healthy{{{JF}}} * on (job, instance) group_left () dsrlb_vip_owner{{{J}}})", "", "A", instant=True),
       target(f"max by (farm, backend) (dsrlb_backend_mac_known{{{JF}}} * on (job, instance) group_left () dsrlb_vip_owner{{{J}}})", "", "B", instant=True),
       target(f"max by (farm, backend, state) ((dsrlb_backend_admin_state{{{JF}}} == 1) * on (job, instance) group_left () dsrlb_vip_owner{{{J}}}) > 0", "", "C", instant=True)],
      12, 12, h=9, extra={"showHeader": True, "cellHeight": "sm"})
panels[-1]["transformations"] = [
    {"id": "merge", "options": {}},
    {"id": "organize", "options": {"excludeByName": {"Time": True, "Value #C": True},
                                   "renameByName": {"Value #A": "healthy", "Value #B": "MAC known", "state": "admin state"}}}]
nextrow(9)
panel("timeseries", "Health-check latency (p50, p99)",
      "histogram_quantile over dsrlb_health_check_duration_seconds_bucket: probes that reached a verdict, "
      "run by the leader only.",
      [(f"histogram_quantile(0.5, sum by (farm, backend, le) (rate(dsrlb_health_check_duration_seconds_bucket{{{JF}}}[$__rate_interval])))",
        "p50 {{farm}}/{{backend}}", "A"),
       (f"histogram_quantile(0.99, sum by (farm, backend, le) (rate(dsrlb_health_check_duration_seconds_bucket{{{JF}}}[$__rate_interval])))",
        "p99 {{farm}}/{{backend}}", "B")],
      0, 12, unit="s")
panel("timeseries", "Health checks by result",
      "rate(dsrlb_health_checks_total) by result: up, down, error (not run: the node's own fault).",
      [(f"sum by (farm, backend, result) (rate(dsrlb_health_checks_total{{{JF}}}[$__rate_interval])) > 0",
        "{{farm}}/{{backend}} {{result}}", "A")],
      12, 12, unit="ops")
nextrow()

row("Datapath tables")
panel("timeseries", "Flow table fill",
      "dsrlb_flow_table_entries / dsrlb_flow_table_capacity per node: above ~0.8, buckets start "
      "evicting (raise datapath.flow_capacity or lower flow_idle).",
      [(f"dsrlb_flow_table_entries{{{JI}}} / dsrlb_flow_table_capacity{{{JI}}}", "{{instance}}", "A")],
      0, 8, unit="percentunit")
panel("timeseries", "Flow table evictions and full",
      "rate(dsrlb_flow_table_evictions_total) by kind, and rate(dsrlb_flow_table_full_total): half-open flows "
      "forwarded without an entry because their bucket held only established flows.",
      [(f"sum by (instance, kind) (rate(dsrlb_flow_table_evictions_total{{{JI}}}[$__rate_interval]))", "{{instance}} evicted {{kind}}", "A"),
       (f"sum by (instance) (rate(dsrlb_flow_table_full_total{{{JI}}}[$__rate_interval]))", "{{instance}} full", "B")],
      8, 8, unit="ops")
panel("timeseries", "Ring fill and drops",
      "max by instance of dsrlb_ring_backlog_frames / dsrlb_ring_slots: how full the fullest worker's "
      "receive ring was when it last came to take a batch (left axis); "
      "rate(dsrlb_drops_total{reason=\"ring_full\"}): frames the kernel dropped because a ring was full "
      "(right axis).",
      [(f"max by (instance) (dsrlb_ring_backlog_frames{{{JI}}} / dsrlb_ring_slots{{{JI}}})", "{{instance}} fill", "A"),
       (f"sum by (instance) (rate(dsrlb_drops_total{{{JI},reason=\"ring_full\"}}[$__rate_interval]))", "{{instance}} drops/s", "B")],
      16, 8, unit="percentunit")["fieldConfig"]["overrides"] = [
    {"matcher": {"id": "byFrameRefID", "options": "B"},
     "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": "pps"}]}]
nextrow()

row("Persistence")
panel("timeseries", "Persistence entries per farm",
      "dsrlb_persistence_entries: pins in the replicated table (every member holds the same table).",
      [(f"max by (farm) (dsrlb_persistence_entries{{{JF}}})", "{{farm}}", "A")], 0, 8, unit="none")
panel("timeseries", "Pin writes applied",
      "rate(dsrlb_persistence_applied_total) by outcome (max over the members; evicted_full: the table is full), "
      "and pin requests dropped on a full worker queue.",
      [(f"max by (outcome) (rate(dsrlb_persistence_applied_total{{{J}}}[$__rate_interval]))", "{{outcome}}", "A"),
       (f"sum by (kind) (rate(dsrlb_persistence_request_drops_total{{{J}}}[$__rate_interval]))", "request drops {{kind}}", "B"),
       (f"sum(rate(dsrlb_persistence_batch_failures_total{{{J}}}[$__rate_interval]))", "batch failures", "C")],
      8, 8, unit="ops")
panel("timeseries", "Pin replication lag (p50, p99)",
      "dsrlb_persistence_lag_seconds: first packet on the owner → pin applied on each node.",
      [(f"histogram_quantile(0.5, sum by (instance, le) (rate(dsrlb_persistence_lag_seconds_bucket{{{JI}}}[$__rate_interval])))", "p50 {{instance}}", "A"),
       (f"histogram_quantile(0.99, sum by (instance, le) (rate(dsrlb_persistence_lag_seconds_bucket{{{JI}}}[$__rate_interval])))", "p99 {{instance}}", "B")],
      16, 8, unit="s")
nextrow()

row("Listeners")
panel("timeseries", "Listener connections",
      "dsrlb_listener_connections: connections open now on the peer, admin and metrics ports (a witness has "
      "peer and metrics).",
      [(f"dsrlb_listener_connections{{{JI}}}", "{{instance}} {{listener}}", "A")], 0, 12, unit="none")
panel("timeseries", "Listener refusals",
      "rate(dsrlb_listener_refused_total): connections closed at accept because max_connections (or a "
      "quarter of it from one address) was reached.",
      [(f"sum by (instance, listener) (rate(dsrlb_listener_refused_total{{{JI}}}[$__rate_interval]))", "{{instance}} {{listener}}", "A")],
      12, 12, unit="ops")
nextrow()

row("Raft")
panel("state-timeline", "Raft leader",
      "dsrlb_raft_is_leader: 1 on the member that leads (and so may own the VIPs while its quorum lease runs).",
      [(f"dsrlb_raft_is_leader{{{JI}}}", "{{instance}}", "A")], 0, 8, fieldcfg=OWNER, extra=STATE_TL)
panel("timeseries", "Log and applied index",
      "dsrlb_raft_last_log_index and dsrlb_raft_applied_index per member: a member whose applied index "
      "stops rising while the others climb has fallen behind.",
      [(f"dsrlb_raft_last_log_index{{{JI}}}", "{{instance}} log", "A"),
       (f"dsrlb_raft_applied_index{{{JI}}}", "{{instance}} applied", "B")], 8, 8, unit="none")
panel("timeseries", "Member lag and lease age (on the leader)",
      "dsrlb_raft_member_lag_entries: entries each member is behind the leader's log (a member the leader "
      "cannot reach grows); dsrlb_raft_quorum_ack_age_seconds: time since a quorum acknowledged the leader, "
      "the age the VIP lease is judged by.",
      [(f"max by (member) (dsrlb_raft_member_lag_entries{{{J}}})", "member {{member}} lag", "A"),
       (f"max(dsrlb_raft_quorum_ack_age_seconds{{{J}}}) * 1000", "quorum ack age (ms)", "B")], 16, 8, unit="none")
nextrow()
panel("timeseries", "Datapath workers running",
      "dsrlb_datapath_workers_running against dsrlb_datapath_workers: fewer running than started means a worker "
      "ended on an error (the node's log says why) and its share of the traffic is lost.",
      [(f"dsrlb_datapath_workers_running{{{JI}}}", "{{instance}} running", "A"),
       (f"dsrlb_datapath_workers{{{JI}}}", "{{instance}} started", "B")], 0, 12, unit="none")
panel("table", "VIPs owned",
      "dsrlb_vip_owned: per VIP, the node that owns it now.",
      [(f"dsrlb_vip_owned{{{J}}} == 1", "", "A", True)], 12, 12)
nextrow()

def var(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "refresh": 2, "includeAll": True, "multi": multi, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1, "hide": 0, "options": [], "regex": "", "skipUrlSync": False}

dash = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "The Prometheus that scrapes the dsrlb nodes",
                  "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "__requires": [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        {"type": "panel", "id": "state-timeline", "name": "State timeline", "version": ""},
        {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        {"type": "panel", "id": "table", "name": "Table", "version": ""}],
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                              "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                              "name": "Annotations & Alerts", "type": "dashboard"},
                             {"datasource": DS, "enable": True, "iconColor": "orange", "name": "Takeovers",
                              "expr": f"changes(dsrlb_vip_owner{{{J}}}[1m]) > 0 and dsrlb_vip_owner{{{J}}} == 1",
                              "titleFormat": "takeover", "textFormat": "{{instance}} became the VIP owner",
                              "step": "15s"}]},
    "description": "dsrlb: a clustered Direct Server Return layer-4 load balancer (metrics of docs/design.md#metrics)",
    "editable": True,
    "fiscalYearStartMonth": 0,
    "graphTooltip": 1,
    "id": None,
    "links": [],
    "panels": panels,
    "refresh": "30s",
    "schemaVersion": 39,
    "tags": ["dsrlb", "load-balancer"],
    "templating": {"list": [
        var("job", "cluster (job)", "label_values(dsrlb_build_info, job)"),
        var("instance", "node", 'label_values(dsrlb_build_info{job=~"$job"}, instance)'),
        var("farm", "farm", 'label_values(dsrlb_packets_total{job=~"$job"}, farm)')]},
    "time": {"from": "now-3h", "to": "now"},
    "timepicker": {},
    "timezone": "",
    "title": "dsrlb",
    "uid": "dsrlb-overview",
    "version": 1,
    "weekStart": ""}
import os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dsrlb.json"), "w") as f:
    json.dump(dash, f, indent=2, ensure_ascii=False)
    f.write("\n")
