"""Entry point: ``python cli.py --help`` (same as the ``nnsight-inoc`` console script)."""

from nnsight_inoc.cli import main

if __name__ == "__main__":
    main()
