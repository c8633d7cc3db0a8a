"""Entry point: ``python cli.py --help`` (same as the ``nnsight-inoc`` console script)."""

from nnsight_inoc.core.deps import exit_if_missing

exit_if_missing()  # one line naming ./setup.sh, not a traceback, when run by a Python without the packages

from nnsight_inoc.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
