"""Fault figures for issue 14's closing note: each fault of tests/e2e/test_faults.py
run once with the same fixed load (8 keep-alive HTTP/1.1 clients on GET hello; the
agent rows on GET /whoami), no assertions, one markdown table on stdout.

    FAAS_BUILD=$PWD/build /usr/bin/python3 tests/bench/faults_bench.py [--only NAME,...] [--json FILE]

Columns: requests = all calls of the run (before and after the kill); by status = HTTP
answers to calls begun at or after the kill; connect errors = refused connects (the
daemon was down); other transport errors = resets and timeouts; in-flight at kill =
calls started before the kill instant and finished after it; time to full service = from
the kill to the end of the first of 50 consecutive 200s (fault_util.Summary). Needs
root (pods)."""
import argparse
import os
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from fault_util import markdown_table, report  # noqa: E402
import test_faults  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated fault names: " +
                    ",".join(n for n, _ in test_faults.SCENARIOS))
    ap.add_argument("--json", default="", help="also append the figures as JSON lines here")
    args = ap.parse_args()
    if args.json:
        os.environ["FAAS_FAULT_FIGURES"] = args.json
    only = {x for x in args.only.split(",") if x}
    figs = []
    for name, run in test_faults.SCENARIOS:
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-", ignore_cleanup_errors=True) as tmp:
            try:
                fig, _ = run(tmp)
            except BaseException as e:  # a skip or a broken run: say so in the table's stead
                if isinstance(e, KeyboardInterrupt):
                    raise
                print(f"{name}: not measured: {type(e).__name__}: {e}", file=sys.stderr)
                traceback.print_exc()
                continue
        figs.append(report(fig))
    print()
    print(markdown_table(figs))
    return 0 if figs else 1


if __name__ == "__main__":
    sys.exit(main())
