import sys

from igat.cli import main

sys.exit(main())
