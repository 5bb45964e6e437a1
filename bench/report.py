"""Print a saved benchmark run as a table: time, GFLOP/s, % of peak, speed-up over reference.

    pytest bench/ --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.seed_shapes import machine_peak_gflops  # noqa: E402


def main(path):
    with open(path) as fh:
        data = json.load(fh)
    peak = machine_peak_gflops()
    rows = {}
    for b in data["benchmarks"]:
        m = re.match(r"(test_\w+)\[(.*)\]", b["name"])
        test, params = (m.group(1), m.group(2)) if m else (b["name"], "")
        backend = b.get("params", {}).get("backend", "")
        key = (test, re.sub(rf"-?{backend}-?", "", params) if backend else params)
        rows.setdefault(key, {})[backend] = b
    print(f"fp32 peak assumed: {peak:.0f} GFLOP/s (FASTCONV_PEAK_GFLOPS overrides)")
    print(f"{'benchmark':<58} {'backend':<10} {'median ms':>10} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'GB/s':>6} {'x ref':>7}")
    for (test, params), by_backend in sorted(rows.items()):
        ref = by_backend.get("reference")
        for backend, b in sorted(by_backend.items()):
            med = b["stats"]["median"]
            info = b.get("extra_info", {})
            gf = info.get("gflop")
            mb = info.get("mbytes")
            gfs = f"{gf / med:8.1f}" if gf else f"{'':>8}"
            pct = f"{100 * gf / med / peak:6.1f}%" if gf else f"{'':>7}"
            gbs = f"{mb / 1e3 / med:6.1f}" if mb else f"{'':>6}"
            ratio = f"{ref['stats']['median'] / med:7.1f}" if ref else f"{'':>7}"
            print(f"{test + '[' + params + ']':<58} {backend:<10} {med * 1e3:10.2f} "
                  f"{gfs} {pct} {gbs} {ratio}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
