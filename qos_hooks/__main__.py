import sys

from qos_hooks.cli.main import main

sys.exit(main())
