"""Importing Ray the one way this package uses it: lazily, and in a mode chosen before the import.

Everything in this package that needs Ray calls :func:`import_ray` inside a function, so the
package imports and runs without Ray installed (Ray is needed only by ``finetune --executor ray``).

Why the mode is chosen here: Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import time
(``ray._private.ray_constants``). With it set to 0 (single-node mode), a process's node address
is 127.0.0.1 and Ray never looks up the machine's outward address; that is what a
:class:`~nnsight_inoc.cluster.local.LocalCluster` and every driver talking to it need (see
``local.py``). A driver joining someone else's cluster must not change its mode, so there the
environment is left as the user set it.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

LOOPBACK = "127.0.0.1"
SINGLE_NODE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# No usage reporting from any process we start (Ray would otherwise try to send it).
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
INSTALL_HINT = "install it with tools/ndif_local/install.sh (or `pip install ray`)"


def ray_missing() -> str | None:
    """Why Ray cannot be used from this interpreter, or None when it can (without importing it)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return f"Ray is not installed for {sys.executable}; {INSTALL_HINT}"
    return None


def import_ray(single_node: bool) -> ModuleType:
    """Import ray, in single-node loopback mode when `single_node`; RuntimeError if missing or imported otherwise.

    single_node: True for a cluster on this host started by :class:`LocalCluster`; False for an
        existing cluster (its own mode applies: the environment is not touched).
    """
    if "ray" not in sys.modules:
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        if single_node:
            os.environ.update(SINGLE_NODE_ENV)
    try:
        import ray
        from ray._private import ray_constants
    except ImportError as err:
        raise RuntimeError(f"Ray is not installed for {sys.executable} ({err}); {INSTALL_HINT}") from err
    if single_node and ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError("ray was imported in multi-node mode before this call, so it would look up this "
                           "machine's outward address; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray")
    return ray
