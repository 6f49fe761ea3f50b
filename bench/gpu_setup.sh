#!/bin/bash
# Run ON the device machine, from the repository root, with .whl carried (see bench/gpu_wheels.sh):
# installs the wheels into /tmp/site. torch-harmonics 0.9.3's compiled helpers are built for torch 2.14;
# if they do not load against the machine's torch, they are replaced by modules that report no optimized
# kernels (the project uses only the spherical harmonic transforms, which are plain PyTorch).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
if ! PYTHONPATH=/tmp/site python3 -c "import torch_harmonics" 2>/dev/null; then
  rm -f /tmp/site/disco_helpers*.so /tmp/site/attention_helpers*.so /tmp/site/torch_harmonics/*/_C*.so
  printf '%s\n' 'def cuda_kernels_is_available(): return False' 'def optimized_kernels_is_available(): return False' \
    > /tmp/site/attention_helpers.py
  cp /tmp/site/attention_helpers.py /tmp/site/disco_helpers.py
  printf '%s\n' 'def pack_psi_dense(*a, **k): raise NotImplementedError("DISCO kernels are not built here")' \
    'preprocess_psi = pack_psi_dense' >> /tmp/site/disco_helpers.py
  echo "gpu_setup: torch-harmonics helpers replaced (built for another torch)"
fi
PYTHONPATH=/tmp/site python3 -c "import torch, torch_harmonics, zarr, dask, distributed; print('gpu_setup: torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'torch-harmonics', torch_harmonics.__version__, 'zarr', zarr.__version__)"
