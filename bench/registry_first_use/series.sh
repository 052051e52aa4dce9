#!/bin/bash
# before (7732e90) and after (1f88bdd) taking turns, 3 rounds
cd /work/main
for round in 1 2 3; do
  for c in 7732e90 1f88bdd; do
    OUT=/tmp/regfix .venv/bin/python bench/request_path/run.py /tmp/tree-$c $c-r$round --seconds 10 --log-level warn --mixes heartbeat,settle,settle_only
  done
done
