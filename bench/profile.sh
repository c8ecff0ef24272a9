#!/usr/bin/env bash
# Profiles the broker that a `certex bench` scenario starts: perf samples its
# process (call graphs by DWARF unwinding) for a few seconds in the middle of
# the run, then writes OUT.folded, OUT.svg (a flamegraph, by inferno) and
# OUT.share (CPU by component, bench/profile-share.py), and the bench's own
# JSON line to OUT.json.
# Usage: bench/profile.sh OUT WAIT SAMPLE_S certex-bench-args...
#   WAIT: seconds, or a text the bench prints on stderr when the phase to
#   profile starts.
#   e.g. bench/profile.sh bench/profiles/unary-after 3 5 publish --publishers 64 --duration 10
# Needs perf, and inferno (`cargo install inferno`). CERTEX=path picks the binary.
set -euo pipefail
OUT=$1 WAIT=$2 SAMPLE=$3
shift 3
CERTEX=${CERTEX:-target/release/certex}
HERE=$(cd "$(dirname "$0")" && pwd)
"$CERTEX" bench "$@" > "$OUT.json" 2> "$OUT.log" &
bench=$!
if [[ "$WAIT" =~ ^[0-9.]+$ ]]; then
    sleep "$WAIT"
else
    # Wait for a progress line of the bench (e.g. "catchup: reading").
    until grep -q -- "$WAIT" "$OUT.log" 2>/dev/null; do sleep 0.1; done
fi
pid=$(pgrep -P "$bench" -f 'serve' | head -1)
[ -n "$pid" ] || { echo "profile: no broker under bench $bench" >&2; exit 1; }
perf record -q -F 997 --call-graph dwarf,16384 -p "$pid" -o "$OUT.data" -- sleep "$SAMPLE" 2>/dev/null
wait "$bench"
perf script -i "$OUT.data" 2>/dev/null | inferno-collapse-perf > "$OUT.folded"
inferno-flamegraph --minwidth 0.3 --title "certex broker: bench $*" < "$OUT.folded" > "$OUT.svg"
python3 "$HERE/profile-share.py" "$OUT.folded" > "$OUT.share"
rm -f "$OUT.data"
cat "$OUT.json" "$OUT.share"
