"""`python -m tagclip_ros.cli`: the same as the `tagclip` executable."""
import sys

from . import main

sys.exit(main())
