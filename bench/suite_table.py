"""Suite results: tag JSON lines with the commit, batch and card (`--tag COMMIT BATCH`, stdin to
stdout, other lines dropped), or print the markdown table of PyJuice ÷ pcc ratios
(`--table FILE.jsonl`; the last line per system and model wins)."""
import json
import subprocess
import sys


def card():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def tag(commit, batch):
    dev = card()
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            print(line, file=sys.stderr)
            continue
        row = json.loads(line)
        row.update({"commit": commit, "batch": int(batch), "card": dev})
        print(json.dumps(row), flush=True)


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def table(path):
    rows = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[(r["system"], r["model"])] = r
    models = sorted({m for _, m in rows}, key=lambda m: (m[:2], int("".join(c for c in m if c.isdigit()) or 0)))
    first = next(iter(rows.values()), {})
    print(f"card {first.get('card', '?')}, commit {first.get('commit', '?')}, batch {first.get('batch', '?')}; ratio = PyJuice ÷ pcc\n")
    print("| model | train s pcc / PyJuice | train ratio | fwd s pcc / PyJuice | fwd ratio | peak GiB pcc / PyJuice "
          "| b1 / b8 µs pcc graph | b1 / b8 µs PyJuice graph | pcc / PyJuice train LL | ready s pcc cold / warm / PyJuice |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m in models:
        p, j = rows.get(("pcc", m), {}), rows.get(("pyjuice", m), {})
        pl, jl = p.get("latency_us", {}), j.get("latency_us", {})
        f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
        print(f"| {m} | {f(p.get('train_s'))} / {f(j.get('train_s'))} | {ratio(j.get('train_s'), p.get('train_s'))} "
              f"| {f(p.get('fwd_s'))} / {f(j.get('fwd_s'))} | {ratio(j.get('fwd_s'), p.get('fwd_s'))} "
              f"| {f(p.get('peak_mem_gib'))} / {f(j.get('peak_gib'))} "
              f"| {f(pl.get('lat_b1_graph_us'), 0)} / {f(pl.get('lat_b8_graph_us'), 0)} "
              f"| {f(jl.get('lat_b1_graph_us'), 0)} / {f(jl.get('lat_b8_graph_us'), 0)} "
              f"| {f(p.get('train_mean_ll'))} / {f(j.get('train_mean_ll'))} "
              f"| {f(p.get('ready_cold_s'))} / {f(p.get('ready_warm_s'))} / {f(j.get('ready_s'))} |")


if __name__ == "__main__":
    if sys.argv[1] == "--tag":
        tag(sys.argv[2], sys.argv[3])
    else:
        table(sys.argv[2])
