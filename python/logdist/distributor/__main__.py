"""`python -m logdist.distributor` is `logdist distributor`."""

from logdist.cli import main

raise SystemExit(main(["distributor", *__import__("sys").argv[1:]]))
