import sys

from sparsehead.cli import main

sys.exit(main())
