"""`python -m geovl` runs the command line."""

from geovl.cli import main

raise SystemExit(main())
