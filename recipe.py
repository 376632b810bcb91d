"""The whole recipe (data, stages 0-2, zero-shot evaluation, final model): `python recipe.py --help` (`fcn_llm.cli`)."""

import sys

from fcn_llm.cli import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe())
