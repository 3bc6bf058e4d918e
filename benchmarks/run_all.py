"""`make bench`: run every benchmarks/bench_*.py in turn and print their summary lines."""

import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
failed = 0
for path in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
    print(f"== {os.path.basename(path)}", flush=True)
    r = subprocess.run([sys.executable, path])
    failed += r.returncode != 0
sys.exit(1 if failed else 0)
