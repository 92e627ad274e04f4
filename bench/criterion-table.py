#!/usr/bin/env python3
"""Markdown table of criterion medians: bench, median, its 95 % CI, throughput at the median.

Usage: cargo bench --bench hot | tee bench-out.txt; bench/criterion-table.py bench-out.txt
Reads $CARGO_TARGET_DIR/criterion (default target/criterion); the benches are listed in the
order of the cargo output given, or by id when none is.
"""
import json, os, re, sys
root = os.path.join(os.environ.get('CARGO_TARGET_DIR', 'target'), 'criterion')
out = open(sys.argv[1]).read() if len(sys.argv) > 1 else ''
# bench ids in run order: a line holding only the id, or "id  time:" on one line
ids = []
lines = out.splitlines()
for i, l in enumerate(lines):
    m = re.match(r'^(\S+)\s+time:', l)
    if m: ids.append(m.group(1)); continue
    if i + 1 < len(lines) and lines[i+1].strip().startswith('time:') and re.match(r'^\S+$', l):
        ids.append(l.strip())
index = {}
for d, _, files in os.walk(root):
    if d.endswith('/new') and 'benchmark.json' in files:
        b = json.load(open(os.path.join(d, 'benchmark.json')))
        e = json.load(open(os.path.join(d, 'estimates.json')))
        index[b['full_id']] = (b, e)
def fmt_t(ns):
    if ns < 1e3: return f'{ns:.1f} ns'
    if ns < 1e6: return f'{ns/1e3:.2f} µs'
    return f'{ns/1e6:.2f} ms'
def fmt_b(bps):
    if bps >= 1 << 30: return f'{bps/(1<<30):.2f} GiB/s'
    return f'{bps/(1<<20):.0f} MiB/s'
if not ids:
    ids = sorted(index)
print('| bench | median | 95% CI of median | throughput (at median) |')
print('| --- | ---: | ---: | ---: |')
for i in ids:
    b, e = index[i]
    med = e['median']['point_estimate']
    ci = e['median']['confidence_interval']
    t = b.get('throughput') or {}
    thr = fmt_b(t['Bytes'] / (med / 1e9)) + f" ({t['Bytes']} B)" if 'Bytes' in t else ''
    print(f"| `{i}` | {fmt_t(med)} | {fmt_t(ci['lower_bound'])} – {fmt_t(ci['upper_bound'])} | {thr} |")
