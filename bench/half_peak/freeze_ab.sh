#!/bin/sh
# The gateway with server.freeze_startup_objects false, then true, taking turns (2 rounds, 3 half-peak runs each at
# 240 scenarios/s, 1,000 terminals), each recording its collector's pauses (gc_pauses.py): bench/half_peak/freeze_ab/.
cd "$(dirname "$0")/../.." || exit 1
out=bench/half_peak/freeze_ab
for round in 1 2; do
  GATEWAY_CONFIG=bench/half_peak/no-freeze.toml GC_OUT=$out/gc-off-$round.json GATEWAY_WRAPPER=bench/half_peak/gc_pauses.py \
    OUT=$out .venv/bin/python bench/half_peak/run.py off-$round --rate 240 --repeat 3 > /tmp/freeze_ab-off-$round.log 2>&1
  GC_OUT=$out/gc-on-$round.json GATEWAY_WRAPPER=bench/half_peak/gc_pauses.py \
    OUT=$out .venv/bin/python bench/half_peak/run.py on-$round --rate 240 --repeat 3 > /tmp/freeze_ab-on-$round.log 2>&1
done
