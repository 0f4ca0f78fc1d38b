#!/usr/bin/env bash
# On the device: unpack the bundle into $SITE_DIR (default: site/ next to this script, i.e.
# .devbundle/site) and check the preinstalled packages it relies on. Use it as:
#   bash .devbundle/setup.sh && export PYTHONPATH=$PWD/.devbundle/site${PYTHONPATH:+:$PYTHONPATH}
# Env: SITE_DIR (where to unpack), PY (the Python to check with, default python3).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SITE_DIR="${SITE_DIR:-$HERE/site}"
PY="${PY:-python3}"
mkdir -p "$SITE_DIR"
SITE_DIR="$(cd "$SITE_DIR" && pwd)"
if [ ! -f "$SITE_DIR/.unpacked" ]; then
  if command -v xz >/dev/null 2>&1; then
    tar -xJf "$HERE/site.tar.xz" -C "$SITE_DIR"
  else  # no xz binary: let Python's lzma do it
    "$PY" -c 'import sys,tarfile; tarfile.open(sys.argv[1],"r:xz").extractall(sys.argv[2])' "$HERE/site.tar.xz" "$SITE_DIR"
  fi
  touch "$SITE_DIR/.unpacked"
fi
# pydantic 2.14 needs typing_extensions>=4.16; if the image's is older, use the copy
# (4.16.0) that ray vendors for its runtime-env agent.
"$PY" - "$SITE_DIR" <<'PYEOF'
import sys, shutil, os
from importlib.metadata import version, PackageNotFoundError
site = sys.argv[1]
def vt(v): return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())
try:
    te = version("typing_extensions")
except PackageNotFoundError:
    te = "0"
if vt(te) < (4, 16):
    src = os.path.join(site, "ray/_private/runtime_env/agent/thirdparty_files/typing_extensions.py")
    shutil.copy(src, os.path.join(site, "typing_extensions.py"))
    print(f"setup.sh: image typing_extensions {te} < 4.16, using bundled 4.16.0")
missing = []
for m in ["numpy", "scipy", "pandas", "pyarrow", "fsspec", "yaml", "requests", "google.protobuf",
          "msgpack", "click", "filelock", "packaging", "attrs", "cv2", "psutil"]:
    try:
        __import__(m)
    except Exception as e:
        missing.append(f"{m} ({e})")
if missing:
    print("setup.sh: WARNING, not importable from the image:", ", ".join(missing))
PYEOF
echo "setup.sh: bundle in $SITE_DIR; now: export PYTHONPATH=$SITE_DIR\${PYTHONPATH:+:\$PYTHONPATH}"
