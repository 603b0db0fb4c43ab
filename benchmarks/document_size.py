"""Peak memory of snapshotting one enormous single-line JSON Lines document.

    .venv/bin/python benchmarks/document_size.py --sizes 16 60 150

For each size (MiB) the parent writes a one-line JSON Lines file; a fresh child process streams it
into a snapshot (the dataset_snapshot step's reader and writer) and reports its peak RSS. Lines
longer than `core.sources.MAX_LINE_BYTES` are refused before they are read whole. Prints only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from divcoef_assets.core.snapshot import write_snapshot
from divcoef_assets.core.sources import FilesSource, iter_texts
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
try:
    info = write_snapshot((("big", t) for t in iter_texts(FilesSource(path=sys.argv[1]), "/")), Path(sys.argv[2]))
    outcome = f"snapshot of a {info.n_chars / 2**20:.0f} MiB document"
except ValueError as exc:
    outcome = "refused: " + str(exc).split(": ", 2)[-1][:60]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"outcome": outcome, "peak_mb": peak, "baseline_mb": before, "seconds": time.perf_counter() - t0}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 60, 150])
    args = parser.parse_args(argv)
    word = "lorem ipsum dolor sit amet "
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes:
            src = Path(tmp) / f"doc_{mb}.jsonl"
            with open(src, "w", encoding="utf-8") as fh:  # streamed: the parent's peak RSS is inherited by the child
                fh.write('{"text": "')
                for _ in range(mb):
                    fh.write(word * (2**20 // len(word)))
                fh.write('"}\n')
            proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(Path(tmp) / "s.parquet"), str(ROOT)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{mb:>4} MiB line: {r['outcome']}; peak RSS {r['peak_mb']:.0f} MB "
                  f"(process baseline {r['baseline_mb']:.0f} MB), {r['seconds']:.1f} s")
            src.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
