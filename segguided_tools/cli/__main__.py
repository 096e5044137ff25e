import sys

from segguided_tools.cli.main import main

sys.exit(main())
