#!/usr/bin/env bash
# Coverage-guided fuzzing on a stable toolchain, without cargo-fuzz:
#
#     fuzz/stable.sh sockperf_stream 60     # target, seconds (default 30)
#
# Builds the target with libFuzzer's coverage instrumentation (the
# `sancov-module` pass needs no nightly; `--target` keeps the flags away from
# build scripts), then runs it from the checked-in seeds in fuzz/corpus/TARGET.
# What it finds goes to fuzz/target/corpus/TARGET (libFuzzer writes to its
# first corpus folder), so the seeds stay as checked in. A crash leaves its
# input in fuzz/artifacts/TARGET/ and makes this script fail.
set -euo pipefail

target=${1:?usage: stable.sh TARGET [SECONDS]}
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
cargo build --release --bin "$target" --target "$triple" --target-dir target/stable
mkdir -p "corpus/$target" "artifacts/$target" "target/corpus/$target"
"target/stable/$triple/release/$target" "target/corpus/$target" "corpus/$target" \
    -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix="artifacts/$target/"
