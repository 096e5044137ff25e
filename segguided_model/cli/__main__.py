import sys

from segguided_model.cli import main

sys.exit(main())
