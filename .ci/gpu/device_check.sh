#!/usr/bin/env bash
# geoseg GPU check. Runs ON the device machine (one NVIDIA H200; python3 3.12 with torch), in
# the copied checkout, with .whl/ carried (made by .ci/gpu/prepare.sh here):
#
#   device tool: command 'bash .ci/gpu/device_check.sh', carry [".whl"], timeout_s 480
#
# About 6-7 minutes: every stage has its own time limit inside an overall budget (BUDGET_S,
# 420 s), so a hang in one stage still leaves the others' logs, and a stage that no longer
# fits is skipped (and counted as failed).
#
# Stages (STAGES, in this order):
#   env      nvidia-smi, python/torch/CUDA/cuDNN (and TF32), the image's versions of
#            geoseg's needs
#   install  the carried wheels into $SITE (/tmp/site; the image's torch is kept), then an
#            import check of everything the stages use, and whether `geoseg bench predict`
#            has --compile
#   smoke    python -m geoseg.bench.device --device $DEVICE: blending on the device equals the
#            CPU bit for bit; predict_scenes on the device against the CPU (fp32, bf16),
#            repeatable across runs and block sizes; compile=True; bf16 training steps
#   predict  geoseg bench predict --size 12000 --model fcn_resnet50 --device cuda
#   train    geoseg bench train --model fcn_resnet50 --device cuda (8 scenes of 2048 px, 512 px
#            chips: 128 per epoch, 8 steps of 16; 10 s of training steps, 3 epochs)
#   compile  geoseg bench predict ... --compile (the same scene, cached), when the command has
#            the flag; else reported as not available (not a failure). Last: a compile is the
#            most expensive and least essential step.
# Logs ($OUT, at most 8 files come back): 01-setup.log (env, install), 02-smoke.log,
# smoke.json, 03-predict.log, 04-train.log, 05-compile.log, 06-gpu-util.csv (nvidia-smi every
# 0.5 s from smoke to the end, with the stage of each sample), summary.txt (printed last).
#
# Environment (all optional): DEVICE (cuda), PYTHON (python3), SITE (/tmp/site), CACHE
# (/tmp/geoseg-bench), WHL (.whl), BUDGET_S (420), STAGES, SMOKE_ARGS (extra arguments of the
# smoke test, e.g. --only NAME), SMOKE_SMALL=1 (its small sizes), PRED_ARGS, TRAIN_ARGS (the
# bench options before --device).
# DRY=1: a CPU dry run on a machine without a GPU, in the project's .venv (else python3; no
# install): device cpu, small smoke sizes, small benches, stages "env smoke predict train
# compile"; about 1-2 minutes on two cores. Every default above can still be overridden.
# shellcheck disable=SC2329 # the stage functions run in child shells (export -f)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2

T0=$(date +%s)
DRY=${DRY:-0}
if [ "$DRY" = 1 ]; then
    DEVICE=${DEVICE:-cpu}
    PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}
    SMOKE_SMALL=${SMOKE_SMALL:-1}
    STAGES=${STAGES:-env smoke predict train compile}
    PRED_ARGS=${PRED_ARGS:---size 1024 --model fcn_resnet18 --tile-size 256 --seconds 1 --workers 2}
    TRAIN_ARGS=${TRAIN_ARGS:---model fcn_resnet18 --scenes 1 --scene-size 512 --chip-size 128 --seconds 1 --epochs 2 --workers 1}
    BUDGET_S=${BUDGET_S:-400}
fi
OUT=${OUT:-/tmp/geoseg-gpu-out} # the device tool sets OUT
PY=${PYTHON:-${PY:-python3}}
SITE=${SITE:-/tmp/site}
CACHE=${CACHE:-/tmp/geoseg-bench}
WHL=${WHL:-$PWD/.whl}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-420}
STAGES=${STAGES:-env install smoke predict train compile}
SMOKE_ARGS=${SMOKE_ARGS:-}
[ "${SMOKE_SMALL:-0}" = 1 ] && SMOKE_ARGS="--small $SMOKE_ARGS"
PRED_ARGS=${PRED_ARGS:---size 12000 --model fcn_resnet50}
TRAIN_ARGS=${TRAIN_ARGS:---model fcn_resnet50 --scenes 8 --seconds 10 --epochs 3 --workers 8}

mkdir -p "$OUT" "$CACHE"
# logs are appended stage by stage: start from none (a dry run's OUT outlives the run)
rm -f "$OUT"/0[1-6]-*.log "$OUT"/06-gpu-util.csv "$OUT"/smoke.json "$OUT"/summary.txt
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
STAGE_FILE=$(mktemp /tmp/geoseg-stage.XXXXXX) # the stage of each utilisation sample
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ "$DRY" != 1 ]; then # the carried wheels, installed by the install stage
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export DEVICE PY SITE WHL OUT CACHE SMOKE_ARGS PRED_ARGS # read by the stages' child shells

if [ ! -f pyproject.toml ] || ! grep -q '^name = "geoseg"' pyproject.toml; then
    echo "device_check.sh: not in a geoseg checkout ($PWD)" | tee -a "$SUMMARY"
    exit 2
fi

note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
want() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
geoseg() { "$PY" -m geoseg.cli "$@"; }

UTIL_PID=""
util_start() {
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    echo "time,stage,gpu_util_pct,mem_util_pct,mem_used_mib,power_w" >"$OUT/06-gpu-util.csv"
    (
        while :; do
            s=$(cat "$STAGE_FILE" 2>/dev/null)
            nvidia-smi --query-gpu=utilization.gpu,utilization.memory,memory.used,power.draw \
                --format=csv,noheader,nounits 2>/dev/null | head -1 |
                sed "s/ //g; s/^/$(date +%s.%N | cut -c1-14),${s:-none},/"
            sleep 0.5
        done
    ) >>"$OUT/06-gpu-util.csv" &
    UTIL_PID=$!
}
util_stop() {
    if [ -n "$UTIL_PID" ]; then
        kill "$UTIL_PID" 2>/dev/null
        wait "$UTIL_PID" 2>/dev/null
        UTIL_PID=""
    fi
    rm -f "$STAGE_FILE"
}
trap util_stop EXIT

# stage NAME LOG CAP_S MIN_S -- COMMAND...: run COMMAND under a limit of min(CAP_S, time left),
# skipping it when less than MIN_S is left; log to $OUT/LOG; record the outcome.
FAILED=0
stage() {
    local name=$1 log=$2 cap=$3 min=$4
    shift 5
    local t
    t=$(left)
    if [ "$t" -lt "$min" ]; then
        note "$(date +%T) $name: SKIPPED (only ${t}s of the ${BUDGET_S}s budget left)"
        FAILED=$((FAILED + 1))
        return 1
    fi
    [ "$t" -lt "$cap" ] && cap=$t
    note "$(date +%T) $name: start (limit ${cap}s)"
    echo "$name" >"$STAGE_FILE"
    local s
    s=$(date +%s)
    # the stages are shell functions: run them in a child bash (exported below)
    echo "== $name: $*" >>"$OUT/$log"
    timeout -k 10 "$cap" bash -c '"$@"' stage "$@" 2>&1 | tee -a "$OUT/$log"
    local rc=${PIPESTATUS[0]}
    echo idle >"$STAGE_FILE"
    local status=ok
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && status="TIMED OUT"
    [ "$rc" -ne 0 ] && [ "$status" = ok ] && status="FAILED (exit $rc)"
    [ "$rc" -ne 0 ] && FAILED=$((FAILED + 1))
    note "$(date +%T) $name: $status in $(($(date +%s) - s))s"
    return "$rc"
}

# -- env -------------------------------------------------------------------------------------
env_report() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit \
            --format=csv
    else
        echo "no nvidia-smi here"
    fi
    echo "cpus: $(nproc)"
    free -g 2>/dev/null | head -2
    df -h /tmp /dev/shm 2>/dev/null # DataLoader workers pass batches through /dev/shm
    "$PY" - <<'PYEOF'
import importlib.metadata as md, sys
import torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version(), "cuda available", torch.cuda.is_available(),
      "cudnn tf32", torch.backends.cudnn.allow_tf32,
      "matmul tf32", torch.backends.cuda.matmul.allow_tf32)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"cc {p.major}.{p.minor}", f"{p.total_memory / 2**30:.0f} GiB",
          p.multi_processor_count, "SMs")
names = ("numpy pandas scipy scikit-image pyarrow torchvision timm huggingface-hub safetensors "
         "pillow click pyyaml tqdm psutil requests cloudpickle toolz fsspec msgpack jinja2 "
         "sortedcontainers urllib3 packaging attrs certifi pyparsing pydantic triton").split()
for n in names:
    try:
        print(f"  {n} {md.version(n)}")
    except md.PackageNotFoundError:
        print(f"  {n} MISSING")
PYEOF
}

# -- install ---------------------------------------------------------------------------------
install_wheels() {
    set -e
    ls -la "$WHL"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHL"/*.whl
    # geoseg runs from the copied tree (python -m puts the current folder first)
    "$PY" - <<'PYEOF'
import importlib
required = ["rasterio", "affine", "dask", "distributed", "torch", "torchvision", "scipy", "yaml",
            "tqdm", "psutil", "geoseg", "geoseg.predict", "geoseg.train", "geoseg.bench",
            "geoseg.bench.device", "geoseg.cli.bench"]
# the synthetic training store (bench train) and the smp models; prepare.sh SET=predict
# leaves them out
optional = ["pyogrio", "pyproj", "shapely", "geopandas", "segmentation_models_pytorch", "timm",
            "skimage", "pyarrow", "pandas", "geoseg.tiles", "geoseg.synth"]
bad, missing = [], []
for m in required + optional:
    try:
        mod = importlib.import_module(m)
    except ImportError as exc:
        (bad if m in required else missing).append(m)
        print(f"  import {m} FAILED: {type(exc).__name__}: {exc}")
        continue
    print(f"  import {m} {getattr(mod, '__version__', '')} ({getattr(mod, '__file__', '')})")
if missing:
    print(f"  NOTE: {missing} missing: bench train will fail")
if bad:
    raise SystemExit(f"imports failed: {bad}")
import rasterio
print("  GDAL (rasterio)", rasterio.__gdal_version__)
from geoseg.models import build_model
build_model("fcn_resnet50", in_channels=5, num_classes=6)
print("  build_model(fcn_resnet50) ok")
if "segmentation_models_pytorch" not in missing:
    build_model("unet", in_channels=5, num_classes=6, encoder="resnet34")
    print("  build_model(unet) ok")
PYEOF
    if geoseg bench predict --help | grep -q -- '--compile'; then
        echo "geoseg bench predict has --compile"
    else
        echo "geoseg bench predict has NO --compile option (the compile stage will not run)"
    fi
}

# -- the rest --------------------------------------------------------------------------------
smoke() {
    # shellcheck disable=SC2086 # SMOKE_ARGS is a list of words
    "$PY" -m geoseg.bench.device --device "$DEVICE" --workdir "$CACHE/smoke" \
        --json "$OUT/smoke.json" $SMOKE_ARGS
}
compile_bench() {
    if ! geoseg bench predict --help | grep -q -- '--compile'; then
        echo "geoseg bench predict has no --compile option: not run"
        return 0
    fi
    # shellcheck disable=SC2086
    geoseg bench predict $PRED_ARGS --compile --device "$DEVICE" --cache "$CACHE"
}

export -f env_report install_wheels smoke compile_bench geoseg
note "geoseg device check, $(date -u +%FT%TZ), device $DEVICE, budget ${BUDGET_S}s, stages: $STAGES"
if want env; then stage env 01-setup.log 60 10 -- env_report; fi
if want install; then
    stage install 01-setup.log 150 30 -- install_wheels || note "install failed: what follows may fail"
fi
util_start
# shellcheck disable=SC2086 # the bench arguments are lists of words
{
    if want smoke; then stage smoke 02-smoke.log 200 60 -- smoke; fi
    if want predict; then
        stage predict 03-predict.log 200 60 -- geoseg bench predict $PRED_ARGS \
            --device "$DEVICE" --cache "$CACHE"
    fi
    if want train; then
        stage train 04-train.log 150 45 -- geoseg bench train $TRAIN_ARGS --device "$DEVICE" \
            --cache "$CACHE"
    fi
    if want compile; then stage compile 05-compile.log 200 60 -- compile_bench; fi
}
util_stop

{
    if [ -s "$OUT/02-smoke.log" ]; then
        echo "== smoke: python -m geoseg.bench.device --device $DEVICE $SMOKE_ARGS"
        grep -E '^geoseg device smoke|^\[(PASS|FAIL)\]|^smoke:' "$OUT/02-smoke.log" | cut -c1-600
    fi
    for f in 03-predict 04-train 05-compile; do
        [ -s "$OUT/$f.log" ] || continue
        head -1 "$OUT/$f.log"
        grep -E '^scene |^WARNING |^\(.\) |^ {10,}\(|^e2e|^seam|^peak|^[A-Za-z.]*(Error|Exception)|no --compile| on (cuda|cpu)' \
            "$OUT/$f.log" | grep -v '^== '
    done
    if [ -s "$OUT/06-gpu-util.csv" ]; then
        echo "== GPU utilisation by stage (nvidia-smi every 0.5 s)"
        awk -F, 'NR > 1 && $3 != "" {
                n[$2]++; u[$2] += $3; if ($3 >= 50) h[$2]++; if ($5 > m[$2]) m[$2] = $5
            } END {
                for (s in n) printf "  %-8s %4d samples, mean %3.0f %%, %3.0f %% of samples >= 50 %%, max %6.0f MiB used\n",
                    s, n[s], u[s] / n[s], 100 * h[s] / n[s], m[s]
            }' "$OUT/06-gpu-util.csv" | sort
    fi
    echo "== $FAILED stage(s) failed or skipped; wall $(($(date +%s) - T0))s"
} | tee -a "$SUMMARY"
exit $((FAILED > 0))
