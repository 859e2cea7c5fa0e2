"""How the distributed tests start Python: under ``torchrun`` for several processes, plainly for one,
with one OpenMP thread per process and the repository on the path."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def launcher(processes: int) -> list[str]:
    """The command prefix that runs ``processes`` copies of what follows (``-m module`` or a script)."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
