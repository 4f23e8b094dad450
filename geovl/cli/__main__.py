"""``python -m geovl.cli`` runs the command line (as ``geovl`` and ``python -m geovl`` do)."""

from geovl.cli import main

raise SystemExit(main())
