import sys

from linguaforge.flows.cli.main import main

sys.exit(main())
