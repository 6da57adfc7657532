#!/usr/bin/env bash
# Coverage-guided fuzzing on a stable toolchain, without cargo-fuzz:
#
#     fuzz/stable.sh sockperf_stream 60     # target, seconds (default 30)
#     fuzz/stable.sh all 3                  # every target in fuzz_targets/, 3 s each
#
# Builds the target with libFuzzer's coverage instrumentation (the
# `sancov-module` pass needs no nightly; `--target` keeps the flags away from
# build scripts), then runs it from the checked-in seeds in fuzz/corpus/TARGET.
# What it finds goes to fuzz/target/corpus/TARGET (libFuzzer writes to its
# first corpus folder), so the seeds stay as checked in. A crash leaves its
# input in fuzz/artifacts/TARGET/ and makes this script fail. With `all`,
# each target's output goes to fuzz/target/fuzz-logs/TARGET.log and one line
# per target is printed (the whole log when it fails).
set -euo pipefail

target=${1:?usage: stable.sh TARGET|all [SECONDS]}
seconds=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
triple=$(rustc -vV | sed -n 's/^host: //p')

export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks --cfg fuzzing"

cd "$here"
bin="target/stable/$triple/release"

# Runs one built target for the time given.
run() { # TARGET
    mkdir -p "corpus/$1" "artifacts/$1" "target/corpus/$1"
    "$bin/$1" "target/corpus/$1" "corpus/$1" \
        -max_total_time="$seconds" -max_len=4096 \
        -artifact_prefix="artifacts/$1/"
}

if [ "$target" != all ]; then
    cargo build --release --bin "$target" --target "$triple" --target-dir target/stable
    run "$target"
    exit
fi

cargo build --release --bins --target "$triple" --target-dir target/stable
mkdir -p target/fuzz-logs
for file in fuzz_targets/*.rs; do
    t=$(basename "$file" .rs)
    log="target/fuzz-logs/$t.log"
    if ! run "$t" >"$log" 2>&1; then
        cat "$log"
        echo "==> $t: FAILED (crash input in fuzz/artifacts/$t/)"
        exit 1
    fi
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log")
    found=$(find "target/corpus/$t" -type f | wc -l)
    echo "==> $t: ${seconds} s, ${runs:-?} runs, $(find "corpus/$t" -type f | wc -l) seeds, $found inputs found so far"
done
