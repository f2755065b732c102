"""Bar chart of section 5's new TCP connections per second, one group per mode,
one bar per client placement (remote: another host over a veth; local: the
server's own namespace). Plain SVG written here: no plotting library, no network.

    chart.py --raw RESULTS.tsv --out RESULTS-steer.svg
"""
import argparse
import collections
import statistics
from xml.sax.saxutils import escape

# The six modes of the comparison; steer_10k and the diagnostic modes are in the tables only.
MODES = ["direct", "steer", "nat", "nft_map", "ipt_redirect", "proxy"]
LABELS = {
    "direct": "direct to :8080",
    "steer": "portd, dispatch: steer",
    "nat": "portd, dispatch: nat",
    "nft_map": "nft map redirect",
    "ipt_redirect": "iptables REDIRECT",
    "proxy": "userspace proxy (nginx)",
}
PLACES = [("remote", "client on another host (veth)", "#3b6ea5"), ("local", "client on the same host", "#e08a2c")]


def medians(raw):
    values = collections.defaultdict(list)
    with open(raw) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) >= 5 and p[0] == "steer" and p[1].startswith("conn/") and p[4] == "0":
                values[p[1]].append(float(p[3]))
    return {k: statistics.median(v) for k, v in values.items() if v}


def svg(med, title):
    modes = [m for m in MODES if any(f"conn/{m}/{p}" in med for p, _, _ in PLACES)]
    top = max(med.values(), default=1.0) or 1.0
    left, width, bar, gap, head = 190, 460, 14, 14, 58
    height = head + len(modes) * (2 * bar + gap) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, (_, label, colour) in enumerate(PLACES):
        x = 10 + i * 250
        out.append(f'<rect x="{x}" y="32" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="42">{escape(label)}</text>')
    y = head
    for m in modes:
        out.append(f'<text x="{left - 8}" y="{y + bar + 4}" text-anchor="end">{escape(LABELS.get(m, m))}</text>')
        for p, _, colour in PLACES:
            v = med.get(f"conn/{m}/{p}")
            if v is not None:
                w = max(1, round(v / top * width))
                out.append(f'<rect x="{left}" y="{y}" width="{w}" height="{bar}" fill="{colour}"/>')
                out.append(f'<text x="{left + w + 4}" y="{y + bar - 3}">{v:,.0f}</text>')
            y += bar
        y += gap
    out.append(f'<line x1="{left}" y1="{head - 4}" x2="{left}" y2="{y - gap + 4}" stroke="black"/>')
    out.append(f'<text x="{left}" y="{y + 16}">new TCP connections/s (median; wrk, one request per connection)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="New TCP connections per second: steering, NAT, proxies")
    a = ap.parse_args()
    med = medians(a.raw)
    if not med:
        raise SystemExit(f"chart.py: no successful section 5 sample in {a.raw}")
    with open(a.out, "w") as f:
        f.write(svg(med, a.title))


if __name__ == "__main__":
    main()
