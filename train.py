"""One training stage (encoder, align, joint): `python train.py --help` (`fcn_llm.cli`)."""

import sys

from fcn_llm.cli import run_train

if __name__ == "__main__":
    sys.exit(run_train())
