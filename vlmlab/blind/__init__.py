"""Vision-centric multiple-choice tasks and vision-only readouts (Fu et al., "Hidden in plain sight").

Notebook 05 is built on this package; so far it holds the world's odd-one-out and style tasks and
their encoder readouts. The VLM, the blind test and the fine-tuning variants are still to come.
"""
from vlmlab.blind.readouts import gram_matrices, odd_one_out_readout, patch_features, style_readout
from vlmlab.blind.tasks import LETTERS, MCTask, balanced_answers, odd_one_out_task, style_task

__all__ = ["LETTERS", "MCTask", "balanced_answers", "odd_one_out_task", "style_task", "patch_features",
           "gram_matrices", "odd_one_out_readout", "style_readout"]
