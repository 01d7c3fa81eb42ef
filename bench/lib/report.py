#!/usr/bin/env python3
"""Turns the raw results of scripts/bench into target/bench/latest.json, prints the
markdown table and which targets are met, and checks the file.

usage: report.py assemble RESULTS_DIR OUT_JSON MODE   (run by scripts/bench)
       report.py table JSON                          (scripts/bench --table)
       report.py check JSON                          (validity and completeness)

`assemble` always writes OUT_JSON (a scenario that did not run gets null figures) and
exits 1 when the file is not valid and complete. Speed never fails anything.
"""
import json
import math
import os
import sys

NAMES = [
    "worker_throughput_1w",
    "worker_throughput_2w",
    "api_ingest_c32",
    "api_ingest_c128",
    "tracing_ingest_sampled_0",
    "tracing_ingest_sampled_1",
    "tracing_drain_sampled_0",
    "tracing_drain_sampled_1",
    "e2e_latency_p50",
    "e2e_latency_p99",
    "campaign_100k_dispatch",
    "campaign_100k_delivered",
    "campaign_100k_vs_bare_smtp",
    "campaign_personalised_10k",
    "flat_10m_drain",
    "flat_10m_claim",
    "flat_10m_admin_queues",
    "flat_10m_sampler",
    "flat_10m_requests_page",
    "flat_10m_dispatcher_sweep",
    "held_snapshot_drain",
    "held_snapshot_recovery",
    "peak_rss_api",
    "peak_rss_worker",
]
# flat_10m_*: the loaded table against the empty one (value loaded, baseline empty).
FLAT = {
    "flat_10m_drain": ("jobs/s", lambda p: p.get("jobs_per_sec"), "ratio >= 0.67"),
    "flat_10m_claim": ("ms", lambda p: p.get("statements", {}).get("claim", {}).get("mean_ms"), "ratio <= 1.5"),
    "flat_10m_admin_queues": ("ms", lambda p: p.get("admin_queues", {}).get("p50_ms"), "ratio <= 1.5"),
    "flat_10m_sampler": ("ms", lambda p: p.get("statements", {}).get("sampler", {}).get("mean_ms"), "ratio <= 1.5"),
    "flat_10m_requests_page": ("ms", lambda p: p.get("requests_page", {}).get("p50_ms"), "ratio <= 1.5"),
    "flat_10m_dispatcher_sweep": ("ms", lambda p: p.get("statements", {}).get("dispatcher_sweep", {}).get("mean_ms"),
                                  "ratio <= 1.5"),
}
# Scenarios that must carry a baseline (the others have none by design).
WITH_BASELINE = {"worker_throughput_1w", "worker_throughput_2w", "api_ingest_c32", "api_ingest_c128",
                 "campaign_personalised_10k", "campaign_100k_vs_bare_smtp",
                 "tracing_ingest_sampled_0", "tracing_ingest_sampled_1",
                 "tracing_drain_sampled_0", "tracing_drain_sampled_1", "held_snapshot_drain"} | set(FLAT)


def load(results, name):
    path = os.path.join(results, name + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def num(x, digits=3):
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return round(float(x), digits)


def ratio(a, b):
    return num(a / b, 3) if a is not None and b not in (None, 0) else None


def scenario(name, value, unit, baseline=None, baseline_value=None, **extra):
    value = num(value)
    baseline_value = num(baseline_value) if baseline is not None else None
    out = {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio(value, baseline_value) if baseline is not None else None,
    }
    out.update(extra)
    return out


def wrk_figures(raw):
    """req/s, latency percentiles (ms) and errors of one wrk run."""
    if not raw:
        return None, {}
    secs = raw["duration_us"] / 1e6
    socket = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return raw["requests"] / secs, {
        "requests": raw["requests"],
        "duration_s": num(secs),
        "connections": raw.get("connections"),
        "p50_ms": num(raw["p50_us"] / 1e3),
        "p90_ms": num(raw["p90_us"] / 1e3),
        "p99_ms": num(raw["p99_us"] / 1e3),
        "p999_ms": num(raw["p999_us"] / 1e3),
        "max_ms": num(raw["max_us"] / 1e3),
        "socket_errors": socket,
        "non_2xx": raw["status_errors"],
        "errors": socket + raw["status_errors"],
    }


def assemble(results, mode):
    build = "release" if mode == "full" else "debug (smoke: sizes and figures are not meaningful)"
    meta = load(results, "meta") or {}
    scenarios = []

    # 1. Queue drain.
    one, two, bull = (load(results, n) for n in ("drain_1w", "drain_2w", "bullmq"))
    one_rate = one and one.get("jobs_per_sec")
    two_rate = two and two.get("jobs_per_sec")
    bull_label = "BullMQ %s draining the same number of no-op jobs, 1 worker, same concurrency, own redis-server, same run" % (
        bull.get("version", "?") if bull else "?")
    common = lambda r: {k: r.get(k) for k in ("jobs", "workers", "concurrency", "seconds", "wall_s")} if r else {}
    scenarios.append(scenario("worker_throughput_1w", one_rate, "jobs/s", bull_label,
                              bull and bull.get("jobs_per_sec"), build=build, **common(one),
                              baseline_seconds=bull and bull.get("seconds"),
                              target="ratio >= 1.5"))
    scenarios.append(scenario("worker_throughput_2w", two_rate, "jobs/s",
                              "worker_throughput_1w of the same run (ratio = scaling factor)", one_rate,
                              build=build, **common(two), target="ratio >= 1.7"))

    # 2. Ingest.
    for c in (32, 128):
        rate, figs = wrk_figures(load(results, "ingest_api_c%d" % c))
        base_rate, base_figs = wrk_figures(load(results, "ingest_base_c%d" % c))
        extra = dict(figs)
        extra.update({"baseline_" + k: v for k, v in base_figs.items()
                      if k in ("p50_ms", "p99_ms", "p999_ms", "errors")})
        scenarios.append(scenario(
            "api_ingest_c%d" % c, rate, "req/s",
            "bare axum endpoint, one parameterised PostgreSQL INSERT per request "
            "(bench/ingest-baseline), same wrk settings, body and pool size, same run",
            base_rate, build=build, **extra,
            target="ratio >= 1.0 and 0 errors"))

    # 2b. Tracing's cost: on at sampling 0 and at 1.0 against off, same run.
    off_rate, _ = wrk_figures(load(results, "tracing_ingest_off"))
    off_drain = (load(results, "tracing_drain_off") or {}).get("jobs_per_sec")
    for label, mode in (("0", "zero"), ("1", "one")):
        rate, figs = wrk_figures(load(results, "tracing_ingest_" + mode))
        scenarios.append(scenario(
            "tracing_ingest_sampled_" + label, rate, "req/s",
            "api_ingest c32 with tracing off, same run", off_rate, build=build, **figs,
            target="ratio >= 0.95" if label == "0" else "ratio >= 0.85"))
        drained = load(results, "tracing_drain_" + mode)
        scenarios.append(scenario(
            "tracing_drain_sampled_" + label, drained and drained.get("jobs_per_sec"), "jobs/s",
            "worker_throughput_1w with tracing off, same run", off_drain, build=build,
            **common(drained), target="ratio >= 0.95" if label == "0" else "ratio >= 0.85"))

    # 3. End-to-end latency.
    e2e = load(results, "e2e") or {}
    e2e_extra = {k: e2e.get(k) for k in ("rate", "duration_s", "requests", "completed", "errors",
                                         "p90_ms", "p999_ms", "max_ms", "mean_ms",
                                         "post_p50_ms", "post_p99_ms", "achieved_send_rate")}
    scenarios.append(scenario("e2e_latency_p50", e2e.get("p50_ms"), "ms", build=build,
                              **e2e_extra, target="<= 3 ms"))
    scenarios.append(scenario("e2e_latency_p99", e2e.get("p99_ms"), "ms", build=build,
                              **e2e_extra, target="<= 10 ms"))

    # 4. Campaign.
    disp, dlv = load(results, "campaign_dispatch") or {}, load(results, "campaign_delivered") or {}
    scenarios.append(scenario("campaign_100k_dispatch", disp.get("dispatch_s"), "s", build=build,
                              recipients=disp.get("recipients"), accepted_s=disp.get("accepted_s"),
                              ready_len=disp.get("ready_len"), committed=disp.get("committed"),
                              body_bytes=disp.get("body_bytes"), target="<= 5 s"))
    scenarios.append(scenario("campaign_100k_delivered", dlv.get("delivered_s"), "s", build=build,
                              recipients=dlv.get("recipients"), workers=dlv.get("workers"),
                              messages_per_sec=dlv.get("messages_per_sec"),
                              from_worker_launch_s=dlv.get("from_worker_launch_s"),
                              sink_messages=dlv.get("sink_messages"), failed=dlv.get("failed")))
    # The delivery's rate against a bare pipelining SMTP client (bench/smtp-blast) with the
    # workers' connection count, into a sink of the same binary, in the same run.
    bare = load(results, "campaign_bare_smtp") or {}
    scenarios.append(scenario(
        "campaign_100k_vs_bare_smtp", dlv.get("messages_per_sec"), "msg/s",
        "a bare pipelining SMTP client (bench/smtp-blast) sending as many messages of the same "
        "size over as many connections as the workers' pools hold (workers x min(EMAILS_CONCURRENCY, "
        "SMTP_POOL_SIZE)) into a sink of the same binary, same run (mean of a round before and one "
        "after the delivery)",
        bare.get("messages_per_sec"), build=build, recipients=dlv.get("recipients"),
        workers=dlv.get("workers"), connections=bare.get("connections"), window=bare.get("window"),
        message_bytes=bare.get("message_bytes"),
        worker_connections_observed=bare.get("worker_connections_observed"),
        baseline_rounds=bare.get("rounds"), baseline_sink_messages=bare.get("sink_messages"),
        target="ratio >= 0.70"))

    # 4b. A personalised campaign against the same campaign without a template.
    per = load(results, "personalised") or {}
    scenarios.append(scenario(
        "campaign_personalised_10k", per.get("templated_per_sec"), "msg/s",
        "the same campaign with its text given (no template), same workers and sink, same run",
        per.get("plain_per_sec"), build=build, recipients=per.get("recipients"),
        workers=per.get("workers"), rounds=per.get("rounds")))

    # 6. Costs as the tables grow: the same probes with FLAT_ROWS finished jobs loaded
    # (value) and on the empty database (baseline), same run.
    empty, loaded = load(results, "flat_empty") or {}, load(results, "flat_loaded") or {}
    rows = (load(results, "flat_meta") or {}).get("rows")
    for name, (unit, figure, target) in FLAT.items():
        scenarios.append(scenario(
            name, figure(loaded), unit,
            "the same probe on the empty database before the load, same run", figure(empty),
            build=build, rows=rows, target=target,
            calls={"empty": (empty.get("statements", {}).get(name[9:], {}) or {}).get("calls"),
                   "loaded": (loaded.get("statements", {}).get(name[9:], {}) or {}).get("calls")}))

    # 7. A snapshot held by a reporting transaction during a drain.
    snap = load(results, "snapshot") or {}
    scenarios.append(scenario(
        "held_snapshot_drain", snap.get("held_tail_per_sec"), "jobs/s",
        "the same drain before the snapshot was taken (median window), same run",
        snap.get("control_per_sec"), build=build, hold_s=snap.get("hold_s"), window_s=snap.get("window_s"),
        held_windows=snap.get("held_windows"), min_backlog=snap.get("min_backlog"),
        jobs_bytes_before=snap.get("jobs_bytes_before"), jobs_bytes_after=snap.get("jobs_bytes_after"),
        target="ratio >= 0.70"))
    scenarios.append(scenario(
        "held_snapshot_recovery", snap.get("recovered_after_s"), "s", build=build,
        after_windows=snap.get("after_windows"), window_s=snap.get("window_s"), target="<= 60 s"))

    # 5. Peak RSS: the max over scenarios, and each scenario's max.
    per = {"api": {}, "worker": {}}
    try:
        with open(os.path.join(results, "rss.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                d = per[r["process"]]
                d[r["scenario"]] = max(d.get(r["scenario"], 0), r["mib"])
    except OSError:
        pass
    for proc in ("api", "worker"):
        d = per[proc]
        scenarios.append(scenario("peak_rss_" + proc, max(d.values()) if d else None, "MiB", build=build,
                                  per_scenario={k: num(v, 1) for k, v in d.items()},
                                  target="<= 100 MiB"))
    return {"machine": meta.get("machine", ""), "scenarios": scenarios}


def problems(doc):
    """What makes the document invalid or incomplete (empty when it is fine)."""
    out = []
    if not isinstance(doc, dict) or set(doc) != {"machine", "scenarios"}:
        return ["top level must be exactly {machine, scenarios}"]
    if not isinstance(doc["machine"], str) or not doc["machine"].strip():
        out.append("machine is empty")
    if not isinstance(doc["scenarios"], list):
        return out + ["scenarios is not a list"]
    names = [s.get("name") for s in doc["scenarios"] if isinstance(s, dict)]
    for n in NAMES:
        if names.count(n) != 1:
            out.append("scenario %s appears %d times" % (n, names.count(n)))
    isnum = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    for s in doc["scenarios"]:
        if not isinstance(s, dict):
            out.append("a scenario is not an object")
            continue
        n = s.get("name")
        for key in ("name", "value", "unit", "baseline", "baseline_value", "ratio"):
            if key not in s:
                out.append("%s: no %s" % (n, key))
        # A recovery that never came within the run is null, with the windows that show it.
        never_recovered = n == "held_snapshot_recovery" and s.get("value") is None and s.get("after_windows")
        if not isnum(s.get("value")) and not never_recovered:
            out.append("%s: value is not a number (the scenario did not run)" % n)
        if not isinstance(s.get("unit"), str) or not s.get("unit"):
            out.append("%s: unit is empty" % n)
        if n in WITH_BASELINE:
            if not isinstance(s.get("baseline"), str) or not isnum(s.get("baseline_value")) or not isnum(s.get("ratio")):
                out.append("%s: baseline, baseline_value or ratio missing" % n)
        elif s.get("baseline") is not None or s.get("baseline_value") is not None or s.get("ratio") is not None:
            out.append("%s: baseline must be null" % n)
        if n and n.startswith("api_ingest") and isnum(s.get("requests")) and isnum(s.get("errors")):
            if s["errors"] > max(1, 0.01 * s["requests"]):
                out.append("%s: %d errors in %d requests: the figure is not valid" % (n, s["errors"], s["requests"]))
    return out


def fmt(x, unit=""):
    if x is None:
        return "—"
    if abs(x) >= 100:
        s = "%.0f" % x
    elif abs(x) >= 10:
        s = "%.1f" % x
    else:
        s = "%.2f" % x
    return s + (" " + unit if unit else "")


def details(s):
    n = s["name"]
    if n.startswith("api_ingest"):
        return "p50 %s / p99 %s / p99.9 %s ms, errors %s (baseline p99 %s ms)" % (
            fmt(s.get("p50_ms")), fmt(s.get("p99_ms")), fmt(s.get("p999_ms")),
            s.get("errors", "—"), fmt(s.get("baseline_p99_ms")))
    if n.startswith("worker_throughput"):
        return "%s jobs, %s worker process(es), concurrency %s" % (s.get("jobs"), s.get("workers"), s.get("concurrency"))
    if n.startswith("e2e_latency"):
        return "%s canaries at %s/s, p99.9 %s ms, errors %s" % (
            s.get("requests"), fmt(s.get("rate")), fmt(s.get("p999_ms")), s.get("errors", "—"))
    if n == "campaign_100k_dispatch":
        return "%s recipients; 202 after %s s" % (s.get("recipients"), fmt(s.get("accepted_s")))
    if n == "campaign_100k_delivered":
        return "%s workers, first claim → last success, %s msg/s" % (s.get("workers"), fmt(s.get("messages_per_sec")))
    if n == "campaign_100k_vs_bare_smtp":
        return "%s workers vs the bare client on %s connections (%s observed from the workers), %s-byte messages; bare rounds %s" % (
            s.get("workers"), s.get("connections"), s.get("worker_connections_observed"), s.get("message_bytes"),
            " / ".join(fmt(r) for r in s.get("baseline_rounds") or []) or "—")
    if n == "campaign_personalised_10k":
        return "%s recipients, %s workers, median of %s alternating rounds" % (
            s.get("recipients"), s.get("workers"), len(s.get("rounds") or []) // 2)
    if n.startswith("flat_10m"):
        calls = s.get("calls") or {}
        return "%s finished jobs loaded%s" % (
            s.get("rows"), "; statement calls empty/loaded %s/%s" % (calls.get("empty"), calls.get("loaded"))
            if calls.get("loaded") is not None else "")
    if n == "held_snapshot_drain":
        return "last minute of a %s s REPEATABLE READ snapshot; windows %s; jobs table %s → %s MB" % (
            s.get("hold_s"), " / ".join(fmt(w) for w in s.get("held_windows") or []),
            fmt((s.get("jobs_bytes_before") or 0) / 1e6), fmt((s.get("jobs_bytes_after") or 0) / 1e6))
    if n == "held_snapshot_recovery":
        return "first %s-s window after the commit at ≥ 0.9× the control; windows %s" % (
            fmt(s.get("window_s")), " / ".join(fmt(w) for w in s.get("after_windows") or []))
    if n.startswith("peak_rss"):
        return ", ".join("%s %s" % (k, fmt(v)) for k, v in (s.get("per_scenario") or {}).items())
    return ""


def met(s):
    """True/False when the scenario has a target, None otherwise."""
    v, r, n = s.get("value"), s.get("ratio"), s["name"]
    if v is None:
        return None
    checks = {
        "worker_throughput_1w": lambda: r is not None and r >= 1.5,
        "worker_throughput_2w": lambda: r is not None and r >= 1.7,
        "api_ingest_c32": lambda: r is not None and r >= 1.0 and s.get("errors") == 0,
        "api_ingest_c128": lambda: r is not None and r >= 1.0 and s.get("errors") == 0,
        "tracing_ingest_sampled_0": lambda: r is not None and r >= 0.95,
        "tracing_drain_sampled_0": lambda: r is not None and r >= 0.95,
        "tracing_ingest_sampled_1": lambda: r is not None and r >= 0.85,
        "tracing_drain_sampled_1": lambda: r is not None and r >= 0.85,
        "e2e_latency_p50": lambda: v <= 3,
        "e2e_latency_p99": lambda: v <= 10,
        "campaign_100k_dispatch": lambda: v <= 5,
        "campaign_100k_vs_bare_smtp": lambda: r is not None and r >= 0.70,
        "held_snapshot_drain": lambda: r is not None and r >= 0.70,
        "held_snapshot_recovery": lambda: v <= 60,
        "flat_10m_drain": lambda: r is not None and r >= 0.67,
        "peak_rss_api": lambda: v <= 100,
        "peak_rss_worker": lambda: v <= 100,
    }
    if n in FLAT and n != "flat_10m_drain":
        return r is not None and r <= 1.5
    return checks[n]() if n in checks else None


def is_smoke(doc):
    """A smoke run (debug binaries, tiny sizes): its figures say nothing about speed."""
    return any(str(s.get("build", "")).startswith("debug") for s in doc["scenarios"])


def table(doc):
    smoke = is_smoke(doc)
    lines = [
        "| scenario | value | baseline | ratio | target | details |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in doc["scenarios"]:
        base = "—" if s.get("baseline_value") is None else fmt(s["baseline_value"], s["unit"])
        m = met(s)
        target = s.get("target") or "—"
        if m is not None and not smoke:
            target += " ✅" if m else " ❌"
        ratio = "—" if s.get("ratio") is None else "%.2f×" % s["ratio"]
        lines.append("| `%s` | %s | %s | %s | %s | %s |" % (
            s["name"], fmt(s.get("value"), s["unit"]), base, ratio, target, details(s)))
    return "\n".join(lines)


def targets_heading(doc):
    if is_smoke(doc):
        return "\nTargets (smoke: shape checked, speed not judged; a full scripts/bench judges them):\n"
    return "\nTargets (never asserted):\n"


def targets(doc):
    out = []
    smoke = is_smoke(doc)
    for s in doc["scenarios"]:
        m = met(s)
        if s.get("target"):
            if m is None:
                state = "not run"
            elif smoke:
                state = "not judged"
            else:
                state = "met" if m else "NOT MET"
            shown = fmt(s.get("value"), s["unit"]) if s.get("ratio") is None or s["name"].startswith("peak") else "%.2f×" % s["ratio"]
            out.append("  %-26s %-26s %-8s (%s)" % (s["name"], s["target"], state, shown))
    return "\n".join(out)


def main(argv):
    if len(argv) == 5 and argv[1] == "assemble":
        doc = assemble(argv[2], argv[4])
        os.makedirs(os.path.dirname(os.path.abspath(argv[3])), exist_ok=True)
        with open(argv[3], "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        # Read back what was written: that is what gets checked.
        with open(argv[3]) as f:
            doc = json.load(f)
        print("Machine: " + doc["machine"] + "\n")
        print(table(doc))
        print(targets_heading(doc) + targets(doc))
        bad = problems(doc)
        if bad:
            print("\n%s is NOT valid and complete:" % argv[3], file=sys.stderr)
            for p in bad:
                print("  - " + p, file=sys.stderr)
            return 1
        print("\nwrote %s (valid, %d scenarios)" % (argv[3], len(doc["scenarios"])))
        return 0
    if len(argv) == 3 and argv[1] in ("table", "check"):
        with open(argv[2]) as f:
            doc = json.load(f)
        bad = problems(doc)
        if argv[1] == "table":
            print("Machine: " + doc["machine"] + "\n")
            print(table(doc))
            print(targets_heading(doc) + targets(doc))
        for p in bad:
            print("invalid: " + p, file=sys.stderr)
        return 1 if bad else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
