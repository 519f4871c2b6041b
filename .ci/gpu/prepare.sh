#!/usr/bin/env bash
# Prepare this checkout for the GPU device check (.ci/gpu/device_check.sh). Run on the machine
# WITHOUT the GPU, which reaches the package registry:
#
#   bash .ci/gpu/prepare.sh
#
# It
#   1. downloads into .whl/ (git-ignored) the CPython 3.12 manylinux x86-64 wheels of the
#      packages that geoseg's prediction, training and benchmarks need and that the GPU
#      machine's image lacks (its python3 3.12 has torch 2.11, torchvision, numpy, pandas,
#      scipy, scikit-image, pyarrow, timm, huggingface-hub, safetensors, click, pyyaml, tqdm,
#      psutil, cloudpickle, toolz, fsspec, msgpack, jinja2, sortedcontainers, urllib3, attrs,
#      certifi, pyparsing, packaging, pillow; not rasterio, the vector stack, dask or smp);
#   2. checks that .whl/ is ignored by git and adds up what the device tool copies (tracked and
#      untracked-not-ignored files, shared/ if any, and .whl/): it must stay under 64 MiB.
#
# Then, with the device tool: command `bash .ci/gpu/device_check.sh`, carry [".whl"],
# timeout_s 480.
#
# Environment:
#   PYVER=3.12   Python of the wheels.
#   DEST=.whl    Folder of the wheels (relative to the checkout root; must be git-ignored).
#   SET=full     full: everything the smoke test and the three benches need (about 58 MiB);
#                predict: only what prediction needs (rasterio, dask, distributed and their
#                needs, about 26 MiB): then run device_check.sh with
#                STAGES="env install smoke predict compile".
#
# Versions: the CI's, except rasterio and pyogrio, which each bundle their own GDAL: rasterio
# 1.4.4 (35.7 MB) with pyogrio 0.13.0 (33.3 MB) alone pass the limit; rasterio 1.4.3 (22.3 MB)
# and pyogrio 0.10.0 (24.0 MB) fit (pyproject asks rasterio>=1.4, pyogrio>=0.9). torchgeo is
# not carried (geoseg never imports it), nor pydantic (only geoseg.pipeline, the job files,
# imports it; no stage runs a job). geoseg itself runs from the copied tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}
SET=${SET:-full}
LIMIT=$((64 * 1024 * 1024))

if [ ! -f pyproject.toml ] || ! grep -q '^name = "geoseg"' pyproject.toml; then
    echo "prepare.sh: not in a geoseg checkout ($PWD)" >&2
    exit 2
fi
git rev-parse --is-inside-work-tree >/dev/null

# prediction: rasterio (bundles GDAL) and its needs that the image lacks; dask, distributed
# and theirs
WHEELS=(
    rasterio==1.4.3 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2
    dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2
    tornado==6.6.1 zict==3.0.0
)
case "$SET" in
    full) # synthetic training scenes and chip stores (shapely, the vector stack: pyogrio
        # bundles GDAL again, pyproj PROJ) and the smp models (timm, huggingface-hub and
        # safetensors are in the image)
        WHEELS+=(pyogrio==0.10.0 pyproj==3.7.2 shapely==2.2.0 geopandas==1.2.0
            segmentation-models-pytorch==0.6.0) ;;
    predict) ;;
    *) echo "prepare.sh: SET=$SET: use full or predict" >&2; exit 2 ;;
esac
case "$PYVER" in
    3.10 | 3.11) WHEELS+=(importlib-metadata zipp) ;; # dask needs it below 3.12
esac

PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 \
    manylinux_2_5 manylinux1; do
    PLATFORMS+=(--platform "${p}_x86_64")
done

# the folder must be ignored before anything lands in it, or it would travel twice
mkdir -p "$DEST"
if ! git check-ignore -q "$DEST/probe.whl"; then
    echo "prepare.sh: $DEST/ is not ignored by git; add '/$DEST/' to .gitignore or" \
        "$(git rev-parse --git-path info/exclude)" >&2
    exit 1
fi
find "$DEST" -maxdepth 1 -type f -name '*.whl' -delete
echo "== downloading ${#WHEELS[@]} wheels ($SET) for CPython $PYVER into $DEST/"
{ python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}" 2>&1; } |
    { grep -v "^WARNING: Location 'file:" || true; }
n=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [ "$n" -ne "${#WHEELS[@]}" ]; then
    echo "prepare.sh: expected ${#WHEELS[@]} wheels in $DEST, found $n" >&2
    exit 1
fi
# one version of each package, or the install there stops
dups=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' -printf '%f\n' | cut -d- -f1 |
    tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "prepare.sh: more than one wheel of: $dups" >&2
    exit 1
fi

# what the device tool copies: tracked and untracked-not-ignored files, shared/, carried paths
tree=$(git ls-files -z --cached --others --exclude-standard |
    xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
shared=0
if [ -d shared ] && git check-ignore -q shared; then
    shared=$(du -sb shared | cut -f1)
fi
wheels=$(du -sb "$DEST" | cut -f1)
total=$((tree + shared + wheels))

echo "== $DEST/"
find "$DEST" -maxdepth 1 -type f -printf '%s %f\n' | sort -rn |
    awk '{printf "  %8.2f MB  %s\n", $1 / 1e6, $2}'
awk -v t="$tree" -v s="$shared" -v w="$wheels" -v d="$DEST" -v l="$LIMIT" 'BEGIN {
    m = 1048576
    printf "== travelling: tree %.1f MiB + ignored shared/ %.1f MiB + %s/ %.1f MiB = %.1f MiB of %d MiB\n",
        t / m, s / m, d, w / m, (t + s + w) / m, l / m
}'
if [ "$total" -ge "$LIMIT" ]; then
    echo "prepare.sh: over the 64 MiB copy limit; remove large untracked files first" \
        "(or SET=predict)" >&2
    exit 1
fi
echo "== ready: device tool: command 'bash .ci/gpu/device_check.sh', carry [\"$DEST\"]," \
    "timeout_s 480"
