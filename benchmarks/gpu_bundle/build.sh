#!/usr/bin/env bash
# Build a stripped, xz-packed site directory holding ray[tune] + albumentations +
# pycocotools (and the deps the GPU image lacks) for an offline device machine.
#
#   benchmarks/gpu_bundle/build.sh           # cp312 bundle -> .devbundle/ (git-ignored), ~5 min
#   PYV=3.11 OUT=build/bundle311 benchmarks/gpu_bundle/build.sh   # cp311 proxy, for testing here
# Then run benchmarks/gpu_check.sh on the GPU machine with .devbundle carried along.
#
# Env (relative paths are taken from the repo root): PYV (python version of the target, default
# 3.12), OUT (dir for site.tar.xz, default .devbundle), WORK (scratch, default
# build/devbundle-$PYV, git-ignored), PIP (pip used for downloads, default the repo's .venv/bin/pip,
# else pip on PATH).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"
PYV="${PYV:-3.12}"
OUT="${OUT:-.devbundle}"
WORK="${WORK:-build/devbundle-$PYV}"
if [ -z "${PIP:-}" ]; then
  if [ -x .venv/bin/pip ]; then PIP=.venv/bin/pip; else PIP=pip; fi
fi
mkdir -p "$WORK" "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(cd "$WORK" && pwd)"

# Pinned set. Everything else ray/albumentations need (numpy, scipy, pandas, pyarrow,
# fsspec, pyyaml, requests, protobuf, msgpack, click, filelock, packaging, attrs,
# opencv-python-headless, typing-extensions, aiohttp, grpcio, ...) is preinstalled on
# the device image (its list of preinstalled Python packages).
PKGS=(
  ray==2.60.0
  albumentations==2.0.8 albucore==0.0.24 simsimd==6.5.16 stringzilla==5.3.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  tensorboardX==2.6.5
  pycocotools==2.0.11
)

mkdir -p "$WORK/whl" "$OUT"
echo "== download (python $PYV) -> $WORK/whl"
"$PIP" download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$WORK/whl" "${PKGS[@]}" 2>&1 | grep -v "is ignored: it is neither" || true

SITE="$WORK/site"
rm -rf "$SITE"; mkdir -p "$SITE"
echo "== unpack"
for w in "$WORK"/whl/*.whl; do unzip -q -o "$w" -d "$SITE"; done
# ray wheels carry no *.data scripts we need; drop them if any
rm -rf "$SITE"/*.data

echo "== size before prune: $(du -sh "$SITE" | cut -f1)"
R="$SITE/ray"
# Not needed for a local Tune search (Java workers, RLlib, Serve, LLM, dashboard web UI,
# example scripts, Cython headers). ray.tune.registry imports ray.rllib inside
# try/except ImportError; the dashboard head is off (include_dashboard=False) and the
# device lacks aiohttp_cors/opencensus anyway (minimal mode), so the UI build is unused.
rm -rf "$R/jars" "$R/rllib" "$R/serve" "$R/llm" \
       "$R/dashboard/client/build" \
       "$R/tune/examples" "$R/train/examples" "$R/includes"
mkdir -p "$R/dashboard/client/build"   # keep the path existing (empty) in case it is probed
find "$SITE" -name "__pycache__" -type d -prune -exec rm -rf {} +

echo "== strip ELF files (debug/unneeded symbols only)"
find "$SITE" -type f \( -name "*.so" -o -name "*.so.*" -o -path "*/ray/core/src/ray/*" \) -print0 |
  while IFS= read -r -d '' f; do
    if head -c4 "$f" | grep -q $'\x7fELF'; then
      strip --strip-unneeded "$f"
    fi
  done
echo "== size after prune+strip: $(du -sh "$SITE" | cut -f1)"

echo "== pack (xz, x86 BCJ + 128 MiB dictionary, single thread; ~1-2 min)"
# Big ELF binaries first and adjacent: gcs_server/raylet/_raylet.so share most code,
# a long-window single-stream xz finds it.
cd "$SITE"
{
  echo ray/core/src/ray/gcs/gcs_server
  echo ray/core/src/ray/raylet/raylet
  echo ray/_raylet.so
  find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort |
    grep -vxE 'ray/core/src/ray/gcs/gcs_server|ray/core/src/ray/raylet/raylet|ray/_raylet.so'
  # keep the (empty) placeholder dir
  echo ray/dashboard/client/build
} > "$WORK/filelist"
tar --owner=0 --group=0 --numeric-owner --no-recursion -cf - -T "$WORK/filelist" |
  xz -T1 --x86 --lzma2=preset=9e,dict=128MiB -c > "$OUT/site.tar.xz.tmp"
mv "$OUT/site.tar.xz.tmp" "$OUT/site.tar.xz"
cp "$HERE/setup.sh" "$HERE/smoke.py" "$OUT/"
ls -la "$OUT/site.tar.xz"
