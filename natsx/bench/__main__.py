"""``python -m natsx.bench``: the same as the ``natsx-bench`` command."""
import sys

from natsx.bench.cli import main

sys.exit(main())
