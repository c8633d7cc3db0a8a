"""``python -m nnsight_inoc.cli``: how parallel workers start (stages/workers.py)."""

from nnsight_inoc.cli import main

main()
