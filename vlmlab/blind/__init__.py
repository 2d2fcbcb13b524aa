"""Vision-centric multiple-choice tasks, vision-only readouts and a small VLM (Fu et al., "Hidden in plain sight").

``tasks``: the world's depth, correspondence, odd-one-out and style questions. ``readouts``: answering
them from the image encoder alone.
"""
from vlmlab.blind.readouts import (correspondence_readout, depth_readout, feature_maps, fit_depth_probe,
                                   gram_matrices, odd_one_out_readout, patch_features, point_features,
                                   style_readout)
from vlmlab.blind.tasks import (LETTERS, MCTask, balanced_answers, correspondence_task, depth_task,
                                odd_one_out_task, style_task)

__all__ = ["LETTERS", "MCTask", "balanced_answers", "odd_one_out_task", "style_task", "depth_task",
           "correspondence_task", "feature_maps", "patch_features", "point_features", "gram_matrices",
           "odd_one_out_readout", "style_readout", "correspondence_readout", "fit_depth_probe", "depth_readout"]
