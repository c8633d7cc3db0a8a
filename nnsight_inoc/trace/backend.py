"""Build the :class:`~nnsight_inoc.tracing.TracedLM` for the configured backend.

The only place that knows whether traces run locally or on an NDIF server. Stages get
a :class:`~nnsight_inoc.study.Study` whose ``tlm`` is either kind and call the same
functions of :mod:`nnsight_inoc.tracing`; only ``--backend`` differs between the two.

Remote: the model is referenced by its key (repo id or path, revision, task), never
shipped; the client only builds a meta-device copy for module structure. A local
folder is keyed by its absolute path, which only a server sharing this filesystem
(the loopback server of ``nnsight_inoc/ndif_local``) can resolve.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nnsight_inoc.core.config import BackendConfig
from nnsight_inoc.trace.tracing import TracedLM, TracingError, wrap


class RemoteUnsupported(NotImplementedError):
    """An operation this package refuses to run on the remote backend (before any work)."""


def host_url(cfg: BackendConfig) -> str:
    """``http(s)://host[:port]``: nnsight 0.8.1 picks TLS from the scheme, so TLS is the scheme."""
    if "://" in cfg.host:
        raise ValueError(f"backend.host must be a bare host name (got {cfg.host!r}); use backend.tls / backend.port")
    scheme = "https" if cfg.tls else "http"
    return f"{scheme}://{cfg.host}" + (f":{cfg.port}" if cfg.port else "")


def configure_client(cfg: BackendConfig) -> None:
    """Point nnsight's client at the configured server (process-wide ``CONFIG.API``).

    The API key is read from the environment variable named by ``backend.api_key_env``;
    an unset variable leaves the key empty (a server without authentication, such as
    the loopback one, accepts that; the public NDIF service answers with an error).
    """
    from nnsight import CONFIG

    CONFIG.API.HOST = host_url(cfg)
    CONFIG.API.APIKEY = os.environ.get(cfg.api_key_env) or None
    # nnsight's per-job status lines would interleave with our progress output; remote
    # errors still raise with the server-side traceback.
    CONFIG.APP.REMOTE_LOGGING = False


def remote_envoy(where: str | Path, tokenizer: Any) -> Any:
    """A meta-device ``TransformersModel`` keyed for the server.

    ``tokenizer=`` is required with transformers 5.24 (without it nnsight cannot guess
    the tokenizer). A local folder is registered in nnsight's id cache under its
    absolute path, because building the key otherwise asks the Hub to canonicalise it.
    """
    import nnsight
    from nnsight.modeling import huggingface as nns_hf

    key = str(where)
    if Path(key).is_dir():
        key = str(Path(key).resolve())
        nns_hf._ID_CACHE[key] = key
    return nnsight.TransformersModel(key, tokenizer=tokenizer, task="text-generation")


def backend_fact(cfg: BackendConfig) -> dict[str, Any]:
    """What the provenance records about the backend (never the key itself)."""
    if cfg.kind == "local":
        return {"kind": "local"}
    import nnsight

    return {
        "kind": "remote",
        "host": host_url(cfg),
        "api_key_env": cfg.api_key_env,
        "nnsight": nnsight.__version__,
        # model.dtype/device/autocast only shape the local meta copy: the server decides both
        "weights_dtype_device": "the server's (the loopback server: float32 on the CPU)",
    }


def require_local(tlm: TracedLM, what: str) -> None:
    """Refuse ``what`` on the remote backend before any of it runs.

    NDIF serves a fixed model with frozen parameters, so anything that changes
    weights (LoRA training) or needs a model other than the served one cannot be
    done there; doing part of it locally would silently mix backends.
    """
    if tlm.remote:
        raise RemoteUnsupported(
            f"{what} cannot run on the remote NDIF backend (the server serves a fixed model with frozen "
            "parameters); run it with --backend local"
        )


def traced_lm(
    cfg: BackendConfig,
    hf_model: torch.nn.Module,
    model_location: str | Path,
    tokenizer: Any,
    autocast: torch.dtype | None,
) -> TracedLM:
    """The TracedLM for ``cfg.kind``.

    ``hf_model`` is traced for the local backend; for the remote one it is the
    meta-device copy (module paths, layer count, width) and ``model_location`` is the
    folder or hub id the server loads.
    """
    if cfg.kind == "local":
        return wrap(hf_model, remote=False, autocast=autocast)
    configure_client(cfg)
    envoy = remote_envoy(model_location, tokenizer)
    tlm = wrap(hf_model, remote=True, autocast=None)
    remote_cfg = envoy._module.config
    if remote_cfg.num_hidden_layers != tlm.n_layers or remote_cfg.hidden_size != tlm.d_model:
        raise TracingError(
            f"the server's model ({model_location}) has {remote_cfg.num_hidden_layers} layers x {remote_cfg.hidden_size}, "
            f"the local one {tlm.n_layers} x {tlm.d_model}"
        )
    tlm.envoy = envoy
    return tlm
