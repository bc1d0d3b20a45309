#!/usr/bin/env bash
# Every GPU figure of the speed issues in one run, on a CUDA machine with no network:
#     bash tools/gpu_bench.sh [OUT_DIR]            # ~6-8 minutes on an H200
# 1. SD 1.5-sized random models (speed does not depend on weight values): tools/make_tiny_models.py --full-size
# 2. tools/bench_translate.py --table: cross-frame eager / compiled (CUDA graphs) / + TAESD, LCM 4 steps,
#    LCM + compile + TAESD, and the keyframe rows (K=4 at 20 steps, LCM + K=4): frames/s against the
#    stock diffusers pipeline called with a batch of chunk_size frames, recompilations after the first chunk.
# 3. tools/bench_pipeline.py with the real models on the GPU: translate_file end to end against the
#    Translator alone on the same frames (canny only where mediapipe, hence pose, cannot be installed).
# Missing packages (diffusers, av, decord, controlnet-aux) are installed from wheels in .whl/ when present.
set -uo pipefail
out=${1:-${OUT:-/tmp/vidreal_gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d .whl ] && ! python3 -c "import diffusers, av, decord, controlnet_aux" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
models=${MODELS:-/tmp/vidreal_full}
frames=${FRAMES:-32}
size=${SIZE:-512}
steps=${STEPS:-20}
device=${DEVICE:-cuda}
dtype=${DTYPE:-fp16}
[ -d "$models/sd" ] || python3 tools/make_tiny_models.py ${FULL:---full-size} "$models" 2>&1 | tail -n 3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
kinds="--controlnet canny=$models/controlnet-canny"
python3 -c "import mediapipe" 2>/dev/null && kinds="$kinds --controlnet pose=$models/controlnet-pose"
for k in 1 4; do
    timeout 240 python3 tools/bench_pipeline.py samples/humanoid_walk_ground.mp4 --model "$models/sd" $kinds \
        --device "$device" --dtype "$dtype" --size "$size" --steps "$steps" --frames "$frames" --chunk-size 8 \
        --keyframe-every $k --flow-size 256 --translator-only --json 2>&1 | tail -n 4 | tee "$out/pipeline_k$k.txt"
done
timeout 420 python3 tools/bench_translate.py --table --model "$models/sd" --controlnet canny="$models/controlnet-canny" \
    --controlnet pose="$models/controlnet-pose" --taesd "$models/taesd" --device "$device" --dtype "$dtype" \
    --size "$size" --steps "$steps" --frames "$frames" --chunk-size 8 --repeats 1 2>&1 | tail -n 20 | tee "$out/table.md"
