"""``python -m ailib``: the ``ailib`` command (see `ailib.cli`)."""

from .cli import main

raise SystemExit(main())
