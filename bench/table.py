#!/usr/bin/env python3
"""The one-run side-by-side table of `bench/compare.sh`: reads its JSON lines
on stdin and prints Markdown tables with medians across runs, the range,
and ratios against JetStream with `sync_interval: always` (the only peer
whose acknowledgements are durable, as certex's receipts are).
Usage: bench/compare.sh 64 8 2048 3 | tee run.jsonl; bench/table.py < run.jsonl"""
import json
import statistics
import sys


def system(line: dict) -> str:
    if "system" in line:
        mode = line.get("mode")
        return f"{line['system']} ({mode})" if mode else line["system"]
    return f"certex ({line['mode']})" if "mode" in line else "certex"


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def main() -> None:
    lines = [json.loads(l) for l in sys.stdin if l.strip().startswith("{")]
    for l in lines:
        if l.get("scenario") == "publish" and "throughput" not in l:
            l["throughput"] = l["records"] / l["duration_s"]
    publish: dict[str, list[dict]] = {}
    for l in lines:
        if l.get("scenario") == "publish":
            publish.setdefault(system(l), []).append(l)
    base = None
    for name, runs in publish.items():
        if "always" in name and "(sync)" in name:
            base = statistics.median(r["throughput"] for r in runs)
    print("| system | in flight | records/s median (range) | ratio to JetStream always | p50 ms | p99 ms | broker CPU µs/record | generator CPU µs/record |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in publish.items():
        t = [r["throughput"] for r in runs]
        med = statistics.median(t)
        ratio = f"{med / base:.2f}×" if base else "–"
        cpu = [r["broker_cpu_us_per_record"] for r in runs if "broker_cpu_us_per_record" in r]
        gen = [r["generator_cpu_us_per_record"] for r in runs if "generator_cpu_us_per_record" in r]
        depth = runs[0].get("window") or runs[0].get("depth")
        shape = f"{runs[0].get('publishers')} × {depth}"
        print(
            f"| {name} | {shape} | {fmt(med)} ({fmt(min(t))}–{fmt(max(t))}) | {ratio} "
            f"| {fmt(statistics.median(r['p50_ms'] for r in runs), 2)} "
            f"| {fmt(statistics.median(r['p99_ms'] for r in runs), 2)} "
            f"| {fmt(statistics.median(cpu), 1) if cpu else '–'} "
            f"| {fmt(statistics.median(gen), 1) if gen else '–'} |"
        )
    print()
    catchup = [l for l in lines if l.get("scenario") == "catchup"]
    if catchup:
        js = [l["records_per_s"] for l in catchup if "always" in l.get("system", "")]
        print("| catch-up | records | records/s | ratio to JetStream always |")
        print("|---|---|---|---|")
        for l in catchup:
            ratio = f"{l['records_per_s'] / js[0]:.2f}×" if js else "–"
            print(f"| {system(l)} | {fmt(l['records'])} | {fmt(l['records_per_s'])} | {ratio} |")
        print()
    fanout = [l for l in lines if l.get("scenario") == "fanout"]
    if fanout:
        print("| fan-out | subscribers | rate/s | delivered | lost | p50 ms | p99 ms | max ms | broker RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for l in fanout:
            print(
                f"| {system(l)} | {l['subscribers']} | {l['rate']} | {fmt(l.get('delivered'))} "
                f"| {fmt(l.get('lost'))} | {fmt(l.get('p50_ms'), 2)} | {fmt(l.get('p99_ms'), 2)} "
                f"| {fmt(l.get('max_ms'), 2)} | {fmt(l.get('broker_rss_mib'), 1)} |"
            )
        print()
    for l in lines:
        if l.get("scenario") == "limits":
            print("Machine limits: " + ", ".join(f"{k} = {v}" for k, v in l.items() if k != "scenario"))


if __name__ == "__main__":
    main()
