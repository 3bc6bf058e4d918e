import sys

from cutscope.cli import main

sys.exit(main())
