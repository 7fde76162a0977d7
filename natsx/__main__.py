import sys

from natsx.cli import main

sys.exit(main())
