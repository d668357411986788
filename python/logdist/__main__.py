"""`python -m logdist` is the `logdist` command."""

from logdist.cli import main

raise SystemExit(main())
