#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/h200/ (this session's), in two parts because the device
# tool carries at most 64 MiB a call and SmolLM2's GGUF is 98 MB: part 1 carries the first half of
# the file (split -b 50000000) in .stage/p1, part 2 the second half and the gguf wheel in .stage/p2.
#   bash benchmarks/h200_session.sh 1    # then, at once (the machine stays warm 30 s):
#   bash benchmarks/h200_session.sh 2
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-benchmarks/results/h200}
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$HOME/m" "$OUT"

if [ "$1" = 1 ]; then
    cp .stage/p1/part_aa "$HOME/m/"
    pip install -q --no-index --no-deps --target /tmp/site .stage/p1/*.whl 2>&1 | tail -1
    export PYTHONPATH=.:/tmp/site
    mkdir -p "$OUT/fuzz" "$OUT/decode" "$OUT/quant"
    timeout 170 python3 benchmarks/fuzz_prefill.py --cases 2000 --out "$OUT/fuzz" | tail -4
    timeout 60 python3 -m attnsieve bench decode --reps 20 --out "$OUT/decode" | tail -16
    timeout 110 python3 -m attnsieve bench kernels --precision int8-fp8 --no-flex --rep-ms 60 \
        --out "$OUT/quant" | tail -12
else
    cat "$HOME/m/part_aa" .stage/p2/part_ab > "$HOME/m/smollm2.gguf"
    echo "$SHA  $HOME/m/smollm2.gguf" | sha256sum -c - || exit 1
    pip install -q --no-index --no-deps --target /tmp/site .stage/p2/*.whl 2>&1 | tail -1
    export PYTHONPATH=.:/tmp/site ATTNSIEVE_SMOLLM2_GGUF="$HOME/m/smollm2.gguf"
    mkdir -p "$OUT/e2e" "$OUT/sync"
    timeout 180 python3 -m attnsieve bench e2e --model smollm2 --rope-scale 16 \
        --lengths 8k,32k,64k,128k --methods flexprefill,streaming --repeats 1 --out "$OUT/e2e" \
        | tail -12
    timeout 60 python3 benchmarks/check_no_sync.py --lengths 8192 --out "$OUT/sync" | tail -10
fi
