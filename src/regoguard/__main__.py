import sys

from regoguard.cli import main

sys.exit(main())
