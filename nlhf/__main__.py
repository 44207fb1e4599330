import sys

from nlhf.cli import main

sys.exit(main())
