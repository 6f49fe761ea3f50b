# Sourced by every sbatch script here: where the code and its Python environment are, and thread counts.
#   FORECAST_HOME  the repository (default: the folder sbatch was called from)
#   FORECAST_VENV  its virtual environment (default: $FORECAST_HOME/.venv)
# `forecast nightly` sets both when it submits jobs.
export FORECAST_HOME="${FORECAST_HOME:-$SLURM_SUBMIT_DIR}"
export FORECAST_VENV="${FORECAST_VENV:-$FORECAST_HOME/.venv}"
if [ ! -x "$FORECAST_VENV/bin/forecast" ]; then
    echo "slurm/env.sh: no forecast command in $FORECAST_VENV/bin (set FORECAST_VENV, or run make install in $FORECAST_HOME)" >&2
    exit 2
fi
export PATH="$FORECAST_VENV/bin:$PATH"
export PYTHONPATH="$FORECAST_HOME${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, whatever the venv installed
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export PYTHONUNBUFFERED=1
