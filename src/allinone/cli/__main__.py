"""`python -m allinone.cli`, as torchrun launches `allinone train`."""

from allinone.cli import main

raise SystemExit(main())
