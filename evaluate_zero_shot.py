"""Zero-shot evaluation of a trained model: `python evaluate_zero_shot.py --help` (`fcn_llm.cli`)."""

import sys

from fcn_llm.cli import run_evaluate

if __name__ == "__main__":
    sys.exit(run_evaluate())
