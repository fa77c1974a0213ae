import sys

from seggpt.cli import main

sys.exit(main())
