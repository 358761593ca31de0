#!/bin/bash
# Extra A/A and detection sessions for the calibration, run alongside benchmarks/ab_calibration.py
cd /tmp/abcal-work/repo
export PYTHONPATH=/tmp/ab16/snapshot
for k in 10 11 12 13 14 15; do
  python -m attnbench ab HEAD~1 HEAD~1 suites/abcal.yaml --out /tmp/abcal-work/ab-aa-extra --seed $k --import abcal_injected > /dev/null 2>> /tmp/ab16/extra.err
  echo "$(date +%T) aa $k exit $?"
  python -m attnbench ab HEAD~1 HEAD suites/abcal.yaml --out /tmp/abcal-work/ab-det-extra --seed $k --import abcal_injected > /dev/null 2>> /tmp/ab16/extra.err
  echo "$(date +%T) det $k exit $?"
done
