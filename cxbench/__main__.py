import sys

from cxbench.cli import main

sys.exit(main())
