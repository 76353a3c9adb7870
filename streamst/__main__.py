import sys

from streamst.cli import main

sys.exit(main())
