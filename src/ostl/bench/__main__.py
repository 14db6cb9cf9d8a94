"""``python -m ostl.bench``: see :mod:`ostl.bench.cli`."""

from .cli import main

raise SystemExit(main())
