#!/usr/bin/env bash
# The LocoOperator-4B-shaped figures on a lent GPU machine (no package index there), in one call:
#   1. llama-cpp-python built from the carried source with CUDA for Hopper only (sm_90), all cores;
#   2. the 36-layer LocoOperator-4B-shaped GGUF written there (synthetic_model.py --from-2-layer);
#   3. scale.py: prefill/decode at 1K/8K/24K for f16, f16 + flash attention and q8_0 + flash attention,
#      the replayed 10-turn exploration, KV and compute buffers, against the 4.8 TB/s bound;
#   4. speculative.py's batch costs at the 4B shape and what speculative = "auto" decides there.
# Figures go to $OUT (scale-gpu-h200.json, speculative-gpu-h200.json, gpu.log); the build and the model
# stay in .gpu-run/ (ignored), so a second call on the still-warm machine resumes where time ran out.
#
#   benchmarks/gpu_pack.sh                  # here, first: fills .gpu/ (source, wheels, vocabulary)
#   benchmarks/gpu.sh                       # there (the device tool's run, carry [".gpu"])
#   benchmarks/gpu.sh --cpu-check           # here: the same phases on this CPU, small sizes, no build
#
# Every phase is timed against GPU_BUDGET_S (default 540 s: a command may run 600): one that cannot
# finish in the time left is skipped with a line saying so, the most wanted figures first.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cpu_check=0
[ "${1:-}" = "--cpu-check" ] && cpu_check=1
OUT=${OUT:-$(mktemp -d)}
budget=${GPU_BUDGET_S:-540}
run_dir=$repo/.gpu-run
mkdir -p "$OUT" "$run_dir"
t0=$SECONDS

say() { echo "[$((SECONDS - t0))s] $*" | tee -a "$OUT/gpu.log" >&2; }
# phase NAME SECONDS_NEEDED COMMAND...: run COMMAND if that much time is left, bounded by what is left.
phase() {
    local name=$1 need=$2 left=$((budget - (SECONDS - t0)))
    shift 2
    if [ "$left" -lt "$need" ]; then
        say "skipped $name: ${left}s left, it needs about ${need}s (run the script again on the warm machine)"
        return 1
    fi
    say "$name: $*"
    timeout "$left" "$@" >>"$OUT/gpu.log" 2>&1
    local rc=$?
    say "$name: exit $rc"
    return $rc
}

if [ "$cpu_check" = 1 ]; then
    PY=${PY:-.venv/bin/python}
    [ -x "$PY" ] || PY=/work/main/.venv/bin/python
    label=cpu-check threads=1 depths=256,1024 layers=2 repeat=1
    quick=(--skip replay --skip threads --skip batch)  # the replay alone takes most of an hour on a busy CPU
    say "cpu check: the installed llama_cpp, the 2-layer model, depths $depths, one thread"
else
    PY=python3
    label=gpu-h200 threads=16 depths=1024,8192,24576 layers=36 repeat=3
    quick=()
    site=$run_dir/site
    export PYTHONPATH=$site:$repo PATH=$site/bin:$PATH
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$OUT/gpu.log"
    if [ ! -f "$site/.wheels-done" ]; then
        phase wheels 30 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl &&
            touch "$site/.wheels-done"
    fi
    if ! "$PY" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)' 2>/dev/null; then
        export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
        export CMAKE_BUILD_PARALLEL_LEVEL=16
        phase build 420 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" \
            .gpu/llama-src.tar.gz || { say "the CUDA build failed: see gpu.log"; exit 1; }
    fi
    "$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "GPU offload:", llama_cpp.llama_supports_gpu_offload())' |
        tee -a "$OUT/gpu.log"
fi

synth=$run_dir/synth
gguf=$synth/loco4b-shaped-L$layers-Q4_K_M.gguf
if [ ! -f "$gguf" ]; then
    from=()
    [ "$layers" -gt 2 ] && from=(--from-2-layer)
    phase model 150 "$PY" benchmarks/synthetic_model.py --layers "$layers" "${from[@]}" --tokenizer .gpu/vocab.gguf \
        --out "$synth" --threads "$threads" || exit 1
fi

bandwidth=()
[ "$cpu_check" = 0 ] && bandwidth=(--bandwidth-gbs 4800)
gpu_words=()
[ "$cpu_check" = 0 ] && gpu_words=(--gpu "NVIDIA H200")
# Speed first (the figures the defaults hang on), then the exploration replay, then the memory rows.
phase scale 120 "$PY" benchmarks/scale.py --model "$gguf" --threads "$threads" --depths "$depths" \
    --skip kv --skip compute --skip load "${quick[@]}" --label "$label" "${gpu_words[@]}" "${bandwidth[@]}" \
    --json "$OUT/scale-$label.json"
phase speculative 60 "$PY" benchmarks/speculative.py --shaped-only "$gguf" --threads "$threads" \
    --repeat "$repeat" --json "$OUT/speculative-$label.json"
phase memory 90 "$PY" benchmarks/scale.py --model "$gguf" --threads "$threads" --only load --only kv --only compute \
    --label "$label" "${gpu_words[@]}" "${bandwidth[@]}" --json "$OUT/scale-memory-$label.json"
say "done: $(ls "$OUT" | tr '\n' ' ')"
