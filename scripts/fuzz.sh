#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each), seeded from
# the conformance data. Not part of .ci/run: fuzzing is long and needs
# cargo-fuzz (`cargo install cargo-fuzz`). RUSTC_BOOTSTRAP lets the stable
# toolchain build with the sanitizer flags cargo-fuzz passes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(event_parser model_file mgmt_request archive_segment)
fi
shared=../shared
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus"
    case $t in
        event_parser)
            # One seed file per conformance and hostile line.
            if [ -z "$(ls -A "$corpus")" ]; then
                split -l 1 -a 5 "$shared/conformance/events.jsonl" "$corpus/conf-" || true
                split -l 1 -a 3 "$shared/conformance/edge-cases/cases.jsonl" "$corpus/edge-" || true
                for f in tests/data/hostile/*.jsonl; do head -c 4096 "$f" > "$corpus/hostile-$(basename "$f")"; done
            fi ;;
        model_file)
            cp -n "$shared/real-kernel/model-at-exit.txt" "$shared/conformance/pseudonym/model.txt" "$corpus/" 2>/dev/null || true ;;
        archive_segment)
            ls fuzz/seeds/archive_segment/* >/dev/null 2>&1 && cp -n fuzz/seeds/archive_segment/* "$corpus/" || true ;;
    esac
    echo "== $t for ${seconds}s"
    cargo fuzz run "$t" "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 2>&1 \
        | grep -E "^#[0-9]+.*(DONE|pulse)|Done [0-9]+ runs|ERROR|SUMMARY|crash-" || true
done
