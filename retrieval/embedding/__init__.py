"""The network: creating a timm backbone with its weights (`backbone`) and running it on
batches of pixels (`embedder`); `threads` keeps a calling program's torch thread count.
The only package that imports torch and timm.

OpenMP threads wait passively (`OMP_WAIT_POLICY=PASSIVE`, unless the environment says
otherwise; it takes effect only if torch is not imported yet): torch's threads otherwise spin
at every layer's barrier while a sibling waits for a core the decode workers hold, burning the
CPU time decoding needs. Measured on 2 cores (AVX-512 BF16), `retrieval index` of resnet50,
passive against active: PNG mix bf16 1.18x, fp32 1.12x; JPEG mix bf16 1.13x, fp32 1.07x
faster; the model alone 2-5% slower. (README, Performance.)
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
