import sys

from mta_ablate.cli import main

sys.exit(main())
