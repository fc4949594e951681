#!/bin/bash
# Same-run before/after of the scale lab (docs/design.md#scale): runs
# lab_scale::two_thousand_farms_forward_and_a_change_touches_one with another build's node
# binary swapped in ("before") and with this build's ("after"), alternating, and prints
# start → ready, RSS, acknowledge and "b1 out" times and the node's CPU per change.
#
#   node/bench/scale-compare.sh /path/to/old/dsrlb ["100 3" "10000 3" ...]
#
# Needs root and a release build of the workspace's tests; restores this build's binary on
# exit, also when interrupted.
set -euo pipefail
old=${1:?usage: scale-compare.sh OLD_DSRLB [\"FARMS BACKENDS\"...]}
shift
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("100 3" "1000 3" "10000 3" "1000 9")
cd "$(dirname "$0")/.."
target=../target/release
lab=""
for b in $(ls -t $target/deps/lab-* | grep -v '\.d$'); do
  if [ "$($b --list 2>/dev/null | grep -c ': test')" -gt 50 ]; then lab=$b; break; fi
done
[ -n "$lab" ] || { echo "no lab test binary: cargo build --release --workspace --tests" >&2; exit 1; }
new=$(mktemp)
cp $target/dsrlb "$new"
trap 'cp "$new" $target/dsrlb; rm -f "$new"' EXIT
run() { # label binary farms backends
  cp "$2" $target/dsrlb
  out=$(DSRLB_REQUIRE_LAB=1 DSRLB_SCALE_FARMS=$3 DSRLB_SCALE_BACKENDS=$4 DSRLB_SCALE_CHANGES=200 \
    $lab lab_scale::two_thousand --test-threads=1 --nocapture 2>&1 || true)
  field() { echo "$out" | grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
  echo "$1 ${3}x$4 ready_ms=$(field start_to_ready_ms) rss_mib=$(field rss_mib)" \
    "acked_ms=$(field off_acked_ms) out_ms=$(field web_out_after_ms)" \
    "cpu_per_change_ms=$(field cpu_per_change_ms) $(echo "$out" | grep -o 'test result: [a-z]*')"
}
for shape in "${shapes[@]}"; do
  for _ in 1 2; do
    run before "$old" $shape
    run after "$new" $shape
  done
done
