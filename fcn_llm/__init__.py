"""FCN-LLM's library: everything between the model (`modeling_fcnllm`, `processing`) and the command lines.

Imports only point down this order (tests/test_layers.py checks it):

    modeling_fcnllm, processing          the model and processor (shipped to the Hub as remote code)
    datasets_scripts                     instruction sets: simulation, loaders of real cohorts, the builder
    fcn_llm.questions, fcn_llm.scoring   questions built from instruction rows; answers scored and generated;
    fcn_llm.threads                      torch's thread count kept at the free cores
    fcn_llm.training                     stage 0, the collator, closed-form fits, the Trainer, the model card
    fcn_llm.evaluation                   zero-shot evaluation: baselines, controls, metrics, reports
    fcn_llm.interpret                    attributions and the planted truth
    fcn_llm.cli                          train, recipe, evaluate (and `train.py`, `recipe.py`, ... at the top)
"""
