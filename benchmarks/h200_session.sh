#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/h200/. Each part is one device call (at most 10 minutes
# and 64 MiB carried); wheels the machine lacks (pytest, pluggy, iniconfig, sageattention 1.0.6,
# gguf 0.19.0) come in a carried folder, $WHEELS, and install into a scratch --target.
#   bash benchmarks/h200_session.sh fuzz     # fuzz/, cuda_tests.log
#   bash benchmarks/h200_session.sh bench    # kernels.*, prefill.*
#   bash benchmarks/h200_session.sh masked   # regression/masked_cost.json (needs earlier kernels)
#   bash benchmarks/h200_session.sh kernel   # CUDA tests, regression/masked_cost.json, bench
#                                            # kernels (bf16) and prefill (on 2078184: flags/);
#   the kernel variants it times are made here first (the device copy has no git history):
#   git show fd1481d:attnsieve/kernels/prefill.py | sed 's/^from attnsieve.reference import
#   check_qkv$/check_qkv = lambda *a: None/' > .stage/t/variants/before.py
#   git show 80cb177:attnsieve/kernels/prefill.py > .stage/t/variants/probe.py
#   bash benchmarks/h200_session.sh model1   # then at once (the machine stays warm 30 s):
#   bash benchmarks/h200_session.sh model2   # e2e on SmolLM2, check_no_sync (first session)
#   bash benchmarks/h200_session.sh eval1    # instead of model2: smollm2-eval/ (fidelity at 8K,
#   bash benchmarks/h200_session.sh eval2    # accuracy tables; eval2 at once after eval1)
# The 1000-case fuzz of fuzz/ ran as: python3 benchmarks/fuzz_prefill.py --cases 1400 --workers 15
# under a 330 s timeout.
# model1/model2 carry SmolLM2's 98 MB GGUF in two halves (split -b 50000000): part_aa in
# .stage/p1, part_ab in .stage/p2 (with the gguf wheel: WHEELS=.stage/p2 for model2 and eval1).
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=.:/tmp/site
OUT=${OUT:-benchmarks/results/h200}
WHEELS=${WHEELS:-.stage/t}
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$HOME/m" "$OUT"
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl 2>&1 | grep -v WARNING
fi

join_gguf() {
    cat "$HOME/m/part_aa" .stage/p2/part_ab > "$HOME/m/smollm2.gguf"
    echo "$SHA  $HOME/m/smollm2.gguf" | sha256sum -c -
}
export ATTNSIEVE_SMOLLM2_GGUF="$HOME/m/smollm2.gguf"

case "$1" in
fuzz)
    mkdir -p "$OUT/fuzz"
    timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_masked_nonfinite.py \
        tests/test_kernel_quant.py::test_cuda_bf16_4k \
        tests/test_kernel_decode.py::test_cuda_long_bf16_and_fp8 \
        tests/test_kernel_prefill.py::test_dense_dispatch_matches_triton > "$OUT/cuda_tests.log" 2>&1
    tail -1 "$OUT/cuda_tests.log"
    timeout 450 python3 benchmarks/fuzz_prefill.py --cases 2000 --workers 15 --out "$OUT/fuzz" | tail -2
    ;;
bench)
    timeout 250 python3 -m attnsieve bench kernels --precision bf16,int8-fp8 --out "$OUT" \
        > "$OUT/kernels.log" 2>&1
    timeout 240 python3 -m attnsieve bench prefill --out "$OUT" > "$OUT/prefill.log" 2>&1
    ;;
masked)
    mkdir -p "$OUT/regression" /tmp/kernels
    git show fd1481d:attnsieve/kernels/prefill.py \
        | sed 's/^from attnsieve.reference import check_qkv$/check_qkv = lambda *a: None/' \
        > /tmp/kernels/before.py
    python3 benchmarks/check_masked_cost.py --out "$OUT/regression" \
        --variant before=/tmp/kernels/before.py
    ;;
kernel)
    timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_masked_nonfinite.py \
        tests/test_kernel_quant.py::test_cuda_bf16_4k \
        tests/test_kernel_decode.py::test_cuda_long_bf16_and_fp8 \
        tests/test_kernel_prefill.py::test_dense_dispatch_matches_triton > "$OUT/cuda_tests.log" 2>&1
    tail -1 "$OUT/cuda_tests.log"
    timeout 120 python3 benchmarks/check_masked_cost.py --out "$OUT" \
        --variant before="$WHEELS/variants/before.py" --variant probe="$WHEELS/variants/probe.py"
    timeout 200 python3 -m attnsieve bench kernels --precision bf16 --out "$OUT" \
        > "$OUT/kernels.log" 2>&1
    tail -3 "$OUT/kernels.log"
    timeout 125 python3 -m attnsieve bench prefill --out "$OUT" > "$OUT/prefill.log" 2>&1
    tail -3 "$OUT/prefill.log"
    ;;
model1)
    cp .stage/p1/part_aa "$HOME/m/"
    ;;
model2)
    join_gguf || exit 1
    mkdir -p "$OUT/e2e" "$OUT/sync"
    timeout 180 python3 -m attnsieve bench e2e --model smollm2 --rope-scale 16 \
        --lengths 8k,32k,64k,128k --methods flexprefill,streaming --repeats 1 --out "$OUT/e2e"
    timeout 60 python3 benchmarks/check_no_sync.py --lengths 8192 --out "$OUT/sync"
    ;;
eval1 | eval2)
    # accuracy tables on SmolLM2 (issues 10-12); cells persist in $HOME/res between the two
    # calls (the machine stays warm), so eval2 reuses eval1's dense cells; each call returns
    # one archive of $HOME/res
    [ -f "$HOME/m/smollm2.gguf" ] || join_gguf || exit 1
    R=$HOME/res
    mkdir -p "$R/prefill" "$R/kv" "$R/precision"
    E="python3 -m attnsieve eval --model smollm2 --device cuda --lengths 4k,8k --samples 20"
    T3=niah_single,passkey,variable_tracking
    if [ "$1" = eval1 ]; then
        timeout 100 $E --methods dense,flexprefill --precision bf16,int8-fp8 --fidelity \
            --lengths 8k --tasks niah_single --out "$R/fidelity8k" | tail -5
        timeout 400 $E --methods dense,flexprefill,xattention,streaming \
            --tasks niah_single,niah_multikey,passkey,variable_tracking --out "$R/prefill" \
            > "$R/prefill/eval.log" 2>&1
    else  # as run on 2026-11-29 with 260 s of device time left (both cut by their timeouts)
        for d in kv precision; do cp "$R/prefill/cells.jsonl" "$R/$d/"; done  # dense cells
        timeout 85 $E --methods dense --precision bf16,int8-fp8 --tasks $T3 \
            --out "$R/precision" > "$R/precision/eval.log" 2>&1
        timeout 120 $E --methods dense --kv none,snapkv,adakv --kv-ratio 0.25 --tasks $T3 \
            --out "$R/kv" > "$R/kv/eval.log" 2>&1
    fi
    for f in "$R"/*/eval.log; do echo "== $f"; grep -E "acc [0-9]|error" "$f" | tail -40; done
    tar czf "$OUT/$1.tgz" -C "$R" .
    ;;
*)
    echo "usage: h200_session.sh fuzz|bench|masked|kernel|model1|model2|eval1|eval2" >&2
    exit 2
    ;;
esac
