#!/usr/bin/env bash
# The GPU path end to end, on a machine with CUDA, in a few minutes: step times and host syncs of BSN against its
# fixed sub-network and DARTS, then search (the paper-cnf preset, one epoch of CIFAR-shaped random data), export,
# sweep and compare through the command line on the GPU (benchmarks/gpu_check.py says what each part does).
#
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#
# --dry-run runs it all on the CPU at tiny sizes: it checks its own set-up where there is no GPU. Where NNI and
# fvcore are not installed (a bare GPU machine: they travel as a folder of unpacked wheels), put that folder at
# .site/ in the checkout: it goes on PYTHONPATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=gpu-check
dry=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry=(--dry-run) ;;
        --out) out="$2"; shift ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d .site ]]; then export PYTHONPATH="$PYTHONPATH:$PWD/.site"; fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec python3 benchmarks/gpu_check.py --out "$out" "${dry[@]}"
