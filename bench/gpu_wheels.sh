#!/bin/bash
# Run HERE (not on the device machine) from the repository root, once per session that will use the device:
# downloads into .whl/ (ignored by git) the wheels bench/gpu_check.py needs that the device image lacks
# (its image has torch, numpy, pandas, scipy, xarray, safetensors, pyyaml, psutil; not these). About 25 MB.
#   bash bench/gpu_wheels.sh
# Then every device call carries .whl and starts with: bash bench/gpu_setup.sh && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  torch-harmonics==0.9.3 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  dask==2026.8.0 distributed==2026.8.0 tornado==6.6.1 zict==3.0.0 tblib==3.2.2 locket==1.0.0 partd==1.4.2 \
  cf-xarray==0.11.3 netcdf4==1.7.5.1.post1 cftime==1.6.6.1 xarray==2026.9.0
du -sh .whl
