#!/usr/bin/env bash
# The GPU long runs (benchmarks/configs/long_runs_gpu.yaml) on a lent GPU machine, five jobs at once with three
# torch threads each (ten jobs of 16 threads thrashed 16 cores before). Everything the run writes, except
# checkpoints and images, is packed into $OUT/long_runs_gpu.tgz every 20 s, so a call cut short still brings back the
# learning-curve points written so far.
#
# Usage (data laid out as ../shared/data: industrial/ and dtd/):
#     DATA=/path/to/data OUT=/path/to/out bash benchmarks/device_long_runs.sh [seconds]
set -u
limit=${1:-480}
result=/tmp/long_runs_gpu
export ANOMALIB_PNPT_DATA="$DATA" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=3 PYTHONUNBUFFERED=1
# Only the tables and logs: with images and checkpoints the archive was over the 16 MiB a file may bring back.
pack() {
    (cd "$(dirname "$result")" && find "$(basename "$result")" -type f \( -name '*.csv' -o -name '*.md' -o -name '*.json' \
        -o -name '*.log' \) -size -4M | tar czf "$OUT/long_runs_gpu.tgz.part" -T -) 2>/dev/null \
        && mv "$OUT/long_runs_gpu.tgz.part" "$OUT/long_runs_gpu.tgz"
}
mkdir -p "$result"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
lscpu | grep "Model name"
(while sleep 20; do pack; done) &
packer=$!
timeout "$limit" python3 benchmarks/run_benchmark.py --config benchmarks/configs/long_runs_gpu.yaml \
    --output "$result" --parallel 5
echo "run_benchmark exit code: $?"
kill "$packer"
pack
for log in "$result"/jobs/*/job.log; do echo "== $log"; tail -n 5 "$log"; done
