import sys

from sidecar.ops.cli import main

sys.exit(main())
