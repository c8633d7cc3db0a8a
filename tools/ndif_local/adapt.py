"""The three adaptations that let ``ndif==0.1.2`` serve a model on a CPU-only machine.

Selected through ndif's own import-path environment variables (start.sh sets them),
so ndif's installed files are never edited:

1. :class:`CompatControllerActor` (``NDIF_CONTROLLER_IMPORT_PATH``): ndif 0.1.2 calls
   ``Remotable.describe_checkpoint(..., trust_remote_code=...)`` and
   ``Remotable.max_tp_size(..., trust_remote_code=...)``, which nnsight 0.8.1 does not
   accept, so every deploy would fail. The controller process drops that keyword
   (nnsight 0.8.1 takes it from the model key instead), and counts a local folder's
   parameters from its safetensors headers (offline, nnsight's fallback meta build
   fails on transformers 5.24 without a tokenizer).
2. :class:`CpuModelActor` (``NDIF_MODEL_IMPORT_PATH``): loads the model on the CPU and
   skips the ``torch.cuda`` calls of ndif's GPU actor.
3. ``NDIF_DEFAULT_DTYPE=float32`` (start.sh), so remote numbers equal a float32 local run.

The GPU the controller insists on is faked in start.sh (``--num-gpus=1`` and a
``cuda_memory_bytes`` resource): the controller only places models on GPU nodes.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
from pathlib import Path
from typing import Any, Callable

import ray
from ndif.services.ray.deployments.controller.controller import _ControllerActor
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel
from nnsight.modeling.mixins.remotable import Remotable
from safetensors import safe_open

logger = logging.getLogger("nnsight_inoc.ndif_local")


def _drop_trust_remote_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Accept ndif 0.1.2's extra keyword and drop it.

    nnsight 0.8.1 reads ``trust_remote_code`` from the model key itself (it is in the
    key only when the client set it), so dropping the keyword loses nothing; ndif
    passes True for every request it considers trusted (all of them, without auth).
    """
    if getattr(fn, "_nnsight_inoc_compat", False):
        return fn

    @functools.wraps(fn)
    def call(model_key: str, *args: Any, trust_remote_code: bool = False, **kwargs: Any) -> Any:
        del trust_remote_code
        return fn(model_key, *args, **kwargs)

    call._nnsight_inoc_compat = True  # type: ignore[attr-defined]
    return call


def _local_parameter_count(original: Callable[..., Any]) -> Callable[..., Any]:
    """Count a local folder's parameters from its safetensors headers instead of asking the Hub.

    Offline, nnsight's fallback builds the architecture on the meta device through a
    ``pipeline``, and with transformers 5.24 that fails for a model object without a
    tokenizer ("Impossible to guess which tokenizer"). The Hub count it would use is
    the number of checkpoint tensor elements, which the headers give exactly.
    """
    if getattr(original, "_nnsight_inoc_compat", False):
        return original

    def count(repo_id: str, revision: str | None) -> int | None:
        folder = Path(repo_id)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if not files:
            return original(repo_id, revision)
        total = 0
        for f in files:
            with safe_open(str(f), framework="pt") as fh:
                for name in fh.keys():
                    total += math.prod(fh.get_slice(name).get_shape())
        return total

    count._nnsight_inoc_compat = True  # type: ignore[attr-defined]
    return count


def patch_remotable() -> None:
    """Idempotent: adapt the nnsight class methods ndif's placement evaluator calls."""
    HuggingFaceModel._hub_parameter_count = staticmethod(  # type: ignore[method-assign]
        _local_parameter_count(HuggingFaceModel._hub_parameter_count)
    )
    Remotable.describe_checkpoint = staticmethod(_drop_trust_remote_code(Remotable.describe_checkpoint))  # type: ignore[method-assign]
    Remotable.max_tp_size = staticmethod(_drop_trust_remote_code(Remotable.max_tp_size))  # type: ignore[method-assign]


class _CompatController(_ControllerActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        patch_remotable()  # in the actor's own process, before the first deploy is evaluated
        super().__init__(*args, **kwargs)


CompatControllerActor = ray.remote(num_cpus=1, num_gpus=0, max_restarts=-1, resources={"head": 1})(_CompatController)


class _CpuModel(BaseModelDeployment):
    """ndif's model actor with the weights on the CPU and no CUDA calls.

    Not cacheable: there is no GPU to park the weights away from.
    """

    CACHEABLE = False

    def load_from_disk(self) -> HuggingFaceModel:
        model = HuggingFaceModel.from_model_key(
            self.model_key, dispatch=True, dtype=self.dtype_name, device_map="cpu", **self.kwargs
        )
        model._module.requires_grad_(False)
        logger.info(f"Loaded {self.model_key} on the CPU in {self.dtype_name}")
        return model

    async def to_cache(self) -> None:
        raise RuntimeError("CPU model actor cannot be cached (no GPU to free)")

    def from_cache(self, gpu_mem_bytes_by_id: dict[int, int]) -> None:
        raise RuntimeError("CPU model actor cannot be restored from cache")

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


CpuModelActor = ray.remote(num_cpus=1, max_restarts=-1)(_CpuModel)
