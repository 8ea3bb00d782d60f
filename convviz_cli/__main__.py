import sys

from convviz_cli.main import main

sys.exit(main())
