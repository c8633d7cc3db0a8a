"""Whether the device a config names exists on this machine, checked before anything is loaded or written.

Without this check, ``--device cuda`` on a machine without CUDA failed deep inside torch with a
57-line traceback, after the run folder had been written.
"""

from __future__ import annotations

import re

from nnsight_inoc.models.errors import ModelInputError

ALLOWED = "auto, cpu, cuda or cuda:N"


def check_device(device: str) -> None:
    """Refuse a device this machine cannot run on; 'auto' and 'cpu' always pass.

    Raises :class:`ModelInputError` (a usage error) naming the device and what this machine has.
    """
    if device in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m is None:
        raise ModelInputError(f"model.device = {device!r} is not a device; use {ALLOWED}")
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise ModelInputError(f"model.device = {device!r}, but this machine has no CUDA device (torch "
                              f"{torch.__version__}); use --device cpu (or auto)")
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise ModelInputError(f"model.device = {device!r}, but this machine has {n} CUDA device(s): cuda:0 to "
                              f"cuda:{n - 1}")
