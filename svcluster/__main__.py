"""``python -m svcluster``: the same command line as ``svcluster``."""

from svcluster.flows.cli import main

if __name__ == "__main__":
    main()
