#!/bin/bash
# Fetch datasets for ddp_bench on a LOGIN node (cluster compute nodes have no internet).
#   bash slurm/fetch_data.sh [DATA_DIR] [DATASET ...]
# Defaults: DATA_DIR=$SCRATCH/ddp_bench_data (or ~/scratch/ddp_bench_data), datasets mnist and cifar10.
# Then submit with the directory, e.g.:
#   DDP_BENCH_DATA=DATA_DIR sbatch --account=def-yourpi slurm/narval.sbatch --data mnist --epochs 2
set -euo pipefail

data_dir=${1:-${SCRATCH:-$HOME/scratch}/ddp_bench_data}
if [ $# -gt 0 ]; then
    shift
fi
datasets=("$@")
if [ ${#datasets[@]} -eq 0 ]; then
    datasets=(mnist cifar10)
fi

for dataset in "${datasets[@]}"; do
    python -m ddp_bench download --data "$dataset" --data-dir "$data_dir"
done
echo "Datasets are in $data_dir; jobs copy them to node-local disk when DDP_BENCH_DATA=$data_dir is set."
