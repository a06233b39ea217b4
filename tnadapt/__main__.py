"""``python -m tnadapt`` — same as the ``tnadapt`` console script."""

from tnadapt.cli import main

raise SystemExit(main())
