"""``python -m gateway`` is the ``edgegw`` command."""

from gateway.cli.main import main

raise SystemExit(main())
