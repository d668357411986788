#!/usr/bin/env bash
# Coverage-guided fuzzing of the wlb core on STABLE Rust: libFuzzer (the libfuzzer-sys crate,
# which compiles libFuzzer's C++ sources with the system C++ compiler) over code instrumented by
# LLVM's SanitizerCoverage pass, switched on with stable -C flags instead of cargo-fuzz's
# nightly -Zsanitizer. No sanitizer runtime (ASan) on stable: a panic is what fails a run, and
# every target is written to panic on a broken property.
#
#   FUZZ_SECONDS=60 crates/wlb-fuzz/fuzz.sh            each target for FUZZ_SECONDS
#   FUZZ_TARGETS=wal_recovery crates/wlb-fuzz/fuzz.sh  only some targets
#   FUZZ_SECONDS=0 crates/wlb-fuzz/fuzz.sh             replay the committed corpus only
#
# The committed seeds (corpus/<target>/) are read, never written; what libFuzzer finds goes to
# target/fuzz/corpus/<target>/ (kept between runs), a crash to target/fuzz/artifacts/<target>/.
# Exit status: non-zero when a target crashed (its panic and the input are printed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-route_packet otlp_logs wal_recovery}
out=$root/target/fuzz

# libfuzzer-sys's build script compiles libFuzzer (C++): install a compiler when there is none.
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "==> fuzz: installing g++ (libFuzzer is C++)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else
        echo "fuzz: a C++ compiler (g++ or clang++) is needed to build libFuzzer" >&2
        exit 1
    fi
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts; --cfg fuzzing is what cargo-fuzz sets too.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing"
cargo fmt --check --manifest-path "$here/Cargo.toml"
echo "==> fuzz: building the targets ($triple, release + SanitizerCoverage)"
start=$SECONDS
cargo build --quiet --release --locked --manifest-path "$here/Cargo.toml" --target "$triple" \
    --target-dir "$out" --bins
echo "==> fuzz: built in $((SECONDS - start)) s"

failed=()
for t in $targets; do
    bin=$out/$triple/release/$t
    mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
    if [[ $seconds == 0 ]]; then
        echo "==> fuzz $t: replaying corpus/$t"
        args=(-runs=0 "$here/corpus/$t")
    else
        echo "==> fuzz $t: ${seconds} s (seeds corpus/$t, working corpus target/fuzz/corpus/$t)"
        args=(-max_total_time="$seconds" "$out/corpus/$t" "$here/corpus/$t")
    fi
    # Progress: libFuzzer's INITED/pulse/DONE lines (cov: edges, ft: features, corp: units,
    # exec/s) and its final stats; on a crash, the panic and the input.
    set +e
    "$bin" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 -artifact_prefix="$out/artifacts/$t/" \
        "${args[@]}" 2>&1 | awk '
            /panicked at/ { p = 2 }
            p > 0 { print; p--; next }
            /[[:space:]](INITED|pulse|DONE)[[:space:]]|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|ERROR|SUMMARY|Test unit written|^Base64|^Executed / { print; fflush() }'
    status=${PIPESTATUS[0]}
    set -e
    # scratch dirs of wal_recovery runs that crashed (an abort skips their cleanup)
    for d in /dev/shm/wlb-fuzz-wal-* "${TMPDIR:-/tmp}"/wlb-fuzz-wal-*; do
        [[ -d $d ]] && ! kill -0 "${d##*-}" 2>/dev/null && rm -rf "$d"
    done
    if [[ $status != 0 ]]; then
        failed+=("$t")
        echo "==> fuzz $t: FAILED (exit $status); reproduce with: $bin <input>" >&2
    fi
done
if ((${#failed[@]})); then
    echo "==> fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "==> fuzz: ${targets// /, }: no crash"
