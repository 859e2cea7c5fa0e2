"""``python -m boltzclf`` is the same as the ``boltzclf`` command."""
import sys

from boltzclf.cli.main import main

sys.exit(main())
