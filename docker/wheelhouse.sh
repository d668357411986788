#!/usr/bin/env bash
# Fill docker/.build/wheelhouse with the newest logdist wheel from dist/ (built by `make wheel`)
# and binary wheels of its dependencies for CPython 3.11 on manylinux x86_64 / aarch64 (this
# machine's architecture), so that docker/Dockerfile installs with `pip install --no-index`.
#
# The dependency set is read from the wheel's own metadata (Requires-Dist). The download is
# skipped when the wheelhouse already holds wheels for that exact set (a stamp file records it).
# Set PIP to choose the pip to run (default: the project's .venv, else python3 -m pip).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${BUILD_DIR:-$HERE/.build}/wheelhouse"
PY_VERSION="${PY_VERSION:-3.11}"
ABI="cp${PY_VERSION/./}"
ARCH="$(uname -m)"

say() { printf '==> [wheelhouse] %s\n' "$*"; }

if [[ -n "${PIP:-}" ]]; then
    read -r -a pip_cmd <<<"$PIP"
elif [[ -x $ROOT/.venv/bin/python ]]; then
    pip_cmd=("$ROOT/.venv/bin/python" -m pip)
else
    pip_cmd=(python3 -m pip)
fi

wheel=$(ls -t "$ROOT"/dist/logdist-*.whl 2>/dev/null | head -n1 || true)
if [[ -z $wheel ]]; then
    echo "wheelhouse: no dist/logdist-*.whl: run 'make wheel' first" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT"/logdist-*.whl
cp "$wheel" "$OUT/"
say "logdist wheel: $(basename "$wheel")"

# Requires-Dist of the wheel, minus extras-only requirements.
mapfile -t reqs < <("${pip_cmd[0]}" - "$wheel" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if "extra ==" not in req:
                print(req)
PY
)
say "dependencies: ${reqs[*]:-none}"

stamp="$OUT/.deps-stamp"
want="$ABI $ARCH ${reqs[*]:-}"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]] && ls "$OUT"/*.whl | grep -qv '/logdist-'; then
    say "dependency wheels already present for this set ($(ls "$OUT"/*.whl | grep -cv '/logdist-') wheels); skipping download"
    exit 0
fi
if [[ ${#reqs[@]} -gt 0 ]]; then
    platforms=()
    for p in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_36; do
        platforms+=(--platform "${p}_${ARCH}")
    done
    say "downloading binary wheels for $ABI ${ARCH} (pip download)"
    "${pip_cmd[@]}" download --quiet --dest "$OUT" --only-binary=:all: \
        --implementation cp --python-version "$PY_VERSION" --abi "$ABI" --abi abi3 --abi none \
        "${platforms[@]}" "${reqs[@]}"
fi
printf '%s' "$want" >"$stamp"
say "$(ls "$OUT"/*.whl | wc -l) wheels in $OUT"
