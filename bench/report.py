"""Write the results: ``<stem>.json`` (every figure) and ``<stem>.md`` (the table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(report: dict[str, Any], folder: Path, stem: str = "latest") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / f"{stem}.md").write_text(markdown(report))


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    send = results.get("send")
    if send:
        rows.append((
            "1. Send: deliveries/s, `notify()` → `sent` (Celery prefork x"
            f"{send['concurrency']}, {send['deliveries']:,} per side)",
            f"{send['app_per_s']}",
            f"no-op task per delivery: {send['noop_per_s']}",
            f"{send['ratio_vs_noop']}", "≥ 1", _met(send["ratio_vs_noop"] >= 1),
        ))  # fmt: skip
        rows.append((
            "", "", f"django-post-office: {send['post_office_per_s']}",
            f"{send['ratio_vs_post_office']}", "> 1", _met(send["ratio_vs_post_office"] > 1),
        ))  # fmt: skip
        batch = send["one_batch"]
        rows.append((
            f"   statements per delivery (one batch of {batch['batch']})",
            f"{batch['per_delivery']}", "", "", "", "",
        ))  # fmt: skip
    pixel = results.get("pixel")
    if pixel:
        rows.append((
            "2. Pixel: requests/s (gunicorn, wrk, "
            f"{pixel['tokens']:,} tokens), a worker applying the opens on the same cores",
            f"{pixel['pixel_rps']} (p99 {pixel['pixel_p99_ms']} ms)",
            f"bare view, same GIF: {pixel.get('bare_2_rps', pixel['bare_rps'])} "
            f"(p99 {pixel['bare_p99_ms']} ms)",
            f"{pixel['ratio']}", "≥ 0.5", _met(pixel["ratio"] >= 0.5),
        ))  # fmt: skip
        if "alone_rps" in pixel:
            rows.append((
                "   the view alone (the opens applied after the load)",
                f"{pixel['alone_rps']} (p99 {pixel['alone_p99_ms']} ms)",
                f"bare view: {pixel['bare_rps']}",
                f"{pixel['alone_ratio']}", "≥ 0.5", _met(pixel["alone_ratio"] >= 0.5),
            ))  # fmt: skip
            rows.append((
                "   opens applied per second by one worker process",
                f"{pixel['apply_rate']} ({pixel['applied_after_alone']:,} opens)",
                "", "", "", "",
            ))  # fmt: skip
        if "naive_rps" in pixel:
            rows.append((
                "   the issue's naive view: one autocommitted `UPDATE` per request"
                " (in the rounds of the view alone)",
                f"{pixel['naive_rps']} (p99 {pixel['naive_p99_ms']} ms)",
                f"bare view: {pixel['bare_rps']}",
                f"{pixel['naive_ratio']}", "", "",
            ))  # fmt: skip
        rows.append((
            "   opens recorded / wrk responses",
            f"{pixel['opens_recorded']:,} / {pixel['pixel_requests']:,}",
            "", "", "all recorded",
            _met(pixel["opens_recorded"] >= pixel["pixel_requests"]),
        ))  # fmt: skip
    hook = results.get("webhook")
    if hook:
        rows.append((
            f"3. Webhook: events/s ({hook['events']:,} SendGrid events, "
            f"{hook['events_per_post']:,} per POST, gunicorn + worker)",
            f"{hook['app_events_per_s']}",
            f"raw `bulk_create`: {hook['bulk_create_events_per_s']}",
            f"{hook['ratio_vs_bulk_create']}", "", "",
        ))  # fmt: skip
        rows.append((
            "   queries per POST: 10 events / 1,000 events",
            f"{hook['queries_per_post_10']} / {hook['queries_per_post_1000']}",
            "", "", "equal",
            _met(hook["queries_per_post_10"] == hook["queries_per_post_1000"]),
        ))  # fmt: skip
    badges = results.get("badges")
    if badges:
        rows.append((
            f"4. Badges: ms per page of {badges['comments']} comments (median of "
            f"{badges['iterations']})",
            f"{badges['badges_ms']} ({badges['badges_queries']} queries)",
            f"same page without badges: {badges['plain_ms']} ({badges['plain_queries']} queries)",
            f"{badges['ratio']}", "≤ 1.3", _met(badges["ratio"] <= 1.3),
        ))  # fmt: skip
        if "badge_states_ms" in badges:
            rows.append((
                "   of which `badge_states()` of the 200 (1 query); `summaries()` of the "
                "same, for comparison",
                f"{badges['badge_states_ms']}; {badges['summaries_ms']}", "", "", "", "",
            ))  # fmt: skip
            rows.append((
                "   opening one popup (its details, loaded then)",
                f"{badges['popup_ms']} ({badges['popup_queries']} queries)", "", "", "", "",
            ))  # fmt: skip
        else:
            rows.append((
                "   of which `summaries()` of the 200 (3 queries)",
                f"{badges['summaries_ms']}", "", "", "", "",
            ))  # fmt: skip
    memory = results.get("memory")
    if memory:
        readings = memory["readings"]
        shown = "; ".join(f"{r['deliveries']:,}: {r['VmHWM_MiB']}" for r in readings[1:])
        rows.append((
            "5. Memory: peak RSS (VmHWM, MiB) of one worker child after N deliveries",
            shown,
            f"after the warm-up: {readings[0]['VmHWM_MiB']}",
            f"{memory['ratio']} (last / first point)", "", "",
        ))  # fmt: skip
    rows += _activity_rows(results.get("activity"))
    return rows


def _activity_rows(activity: dict[str, Any] | None) -> list[tuple[str, ...]]:
    if not activity:
        return []
    api, query = activity["search"]["api"], activity["search"]["query"]
    deliveries = activity["load"]["sizes"]["delivery"]["rows"]
    purge = activity["purge"]
    during, before, after = purge["during"], purge["before"], purge["after"]

    def figures(side: dict[str, Any]) -> str:
        return f"{side['p50_ms']} / {side['p95_ms']} / {side['p99_ms']}"

    exact, prefix = api["exact"], api["prefix"]
    return [
        (
            f"6. Activity log: search by a whole address through the API, ms p50 / p95 / p99 "
            f"({deliveries:,} deliveries, {exact['n']} addresses in random case)",
            figures(exact),
            f"the page's database query alone: {figures(query['exact'])}",
            "", "p95 < 20", _met(exact["p95_ms"] < 20),
        ),
        (
            f"   search by the beginning of an address ({prefix['n']} prefixes, 3 "
            "characters up to the `@`)",
            figures(prefix),
            f"the page's database query alone: {figures(query['prefix'])}",
            "", "", "",
        ),
        (
            f"   sends/s during the purge of {purge['purge'].get('deliveries', '?'):,} "
            f"deliveries ({purge['purge']['seconds']} s)",
            f"{during['per_s']} (longest pause {during['longest_pause_s']} s)",
            f"without: {before['per_s']} before, {after['per_s']} after",
            f"{purge['ratio']}", "no pause > 1 s", _met(during["longest_pause_s"] <= 1),
        ),
    ]  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    lines = [
        "# Benchmark results",
        "",
        f"Run of {report['date']} by `make bench` ({report['total_seconds']} s), "
        f"commit {report['revision']['commit']}"
        + (
            f" with uncommitted changes to {', '.join(report['revision']['app_files_changed'])}"
            if report["revision"]["app_files_changed"]
            else ""
        )
        + ". What each figure means: docs/performance.md.",
        "",
        *(
            ["**Diagnostic run: `synchronous_commit = off` on the bench database.**", ""]
            if report.get("synchronous_commit") == "off"
            else []
        ),
        "| Benchmark | App | Baseline | Ratio | Goal | Met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    for name, error in report.get("errors", {}).items():
        lines.append(f"| {name}: FAILED | {error} | | | | |")
    machine, versions = report["machine"], report["versions"]
    latency = report.get("commit_latency", {})
    lines += [
        "",
        "## Machine",
        "",
        f"- {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}",
        "- " + ", ".join(f"{name} {version}" for name, version in versions.items()),
    ]
    probes = [(f"{when} the run", value) for when, value in latency.items()]
    probes += [
        (f"{when} {name}", figures[f"commit_latency_{when}"])
        for name, figures in results.items()
        for when in ("before", "after")
        if f"commit_latency_{when}" in figures
    ]
    lines.append(
        "- PostgreSQL, one single-row INSERT committed on its own (median / p90 ms): "
        + "; ".join(f"{when} {v['median_ms']} / {v['p90_ms']}" for when, v in probes)
    )
    loads = _loads(results)
    if loads:
        lines.append(
            "- load average (1 min) before each side: "
            + ", ".join(f"{k} {v}" for k, v in loads.items())
            + f"; at the end {report.get('load_average_end')}"
        )
    lines += ["", "## Details", "", "```json", json.dumps(_details(results), indent=2), "```", ""]
    return "\n".join(lines)


def _loads(results: dict[str, Any]) -> dict[str, float]:
    loads = {}
    for name, runs in results.get("send", {}).get("runs", {}).items():
        loads[f"send/{name}"] = max(r["load_before"] for r in runs)
    for name in ("pixel", "webhook"):
        if name in results:
            loads[name] = results[name]["load_before"]
    return loads


def _details(results: dict[str, Any]) -> dict[str, Any]:
    """The figures behind the table, without what the table shows already."""
    details: dict[str, Any] = {}
    if "send" in results:
        details["send"] = {
            "rounds": {
                name: [
                    {key: r[key] for key in ("per_s", "seconds", "enqueue_seconds", "cpu_percent")}
                    for r in runs
                ]
                for name, runs in results["send"]["runs"].items()
            },
            "one_batch_statements": results["send"]["one_batch"]["statements"],
        }
    if "pixel" in results:
        sides = ("pixel", "bare", "alone", "naive", "bare_2")
        details["pixel"] = {
            side: results["pixel"][side] for side in sides if side in results["pixel"]
        } | {
            "server": results["pixel"]["server"],
            "wrk": results["pixel"]["wrk"],
        }
    if "webhook" in results:
        hook = results["webhook"]
        details["webhook"] = {
            key: hook[key]
            for key in (
                "post_median_ms", "post_seconds", "seconds", "cpu_percent", "statuses",
                "worker_statements",
            )
        }  # fmt: skip
    if "badges" in results:
        details["badges"] = results["badges"]["pages"]
    if "memory" in results:
        details["memory"] = {key: results["memory"][key] for key in ("pool", "readings", "per_s")}
    if "activity" in results:
        activity = results["activity"]
        details["activity"] = {
            "load": activity["load"],
            "search": {
                key: activity["search"][key] for key in ("api", "query", "rows_on_first_page")
            }
            | {
                "plans": {
                    name: {key: plan[key] for key in ("params", "nodes", "execution_ms")}
                    for name, plan in activity["search"]["plans"].items()
                }
            },
            "purge": activity["purge"],
        }
    return details
