import sys

from clasflow.cli import main

sys.exit(main())
