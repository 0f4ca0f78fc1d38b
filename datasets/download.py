"""Download and prepare a public dataset: ``python datasets/download.py NAME [--root DIR] [--categories ...]``.

The same as ``detect-automl download`` (see datasets/README.md); NAME is voc2007, voc2012, coco2017 or fruit.
"""

import sys

from detect_automl.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
