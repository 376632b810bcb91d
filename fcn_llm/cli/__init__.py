"""The command lines, as console entry points (`pyproject.toml` `[project.scripts]`) that exit 0 on success.

    fcn-llm-build      = python -m datasets_scripts.build_instructions   (an instruction set)
    fcn-llm-train      = python train.py                                 (one training stage)
    fcn-llm-recipe     = python recipe.py                                (the whole recipe)
    fcn-llm-evaluate   = python evaluate_zero_shot.py                    (zero-shot evaluation)
    fcn-llm-interpret  = python -m fcn_llm.interpret                     (which connections drove an answer)
"""

from __future__ import annotations


def run_build() -> int:
    from datasets_scripts.build_instructions import main

    main()
    return 0


def run_train() -> int:
    from fcn_llm.cli.train import main

    main()
    return 0


def run_recipe() -> int:
    from fcn_llm.cli.recipe import main

    main()
    return 0


def run_evaluate() -> int:
    from fcn_llm.cli.evaluate import main

    return int(main() or 0)


def run_interpret() -> int:
    from fcn_llm.interpret.__main__ import main

    main()
    return 0
