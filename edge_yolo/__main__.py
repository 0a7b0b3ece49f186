import sys

from edge_yolo.cli import main

sys.exit(main())
