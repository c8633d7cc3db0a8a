"""A real NDIF server (PyPI ``ndif==0.1.2``) on loopback, for the remote-parity test.

``start.sh`` / ``stop.sh`` run Redis, a moto S3 store, a Ray head and the NDIF API inside
a private network namespace (only ``lo``), and :mod:`.adapt` holds the three
adaptations the server needs on a CPU-only machine. Nothing here is imported by the
study code; see the README section "Remote backend".
"""
