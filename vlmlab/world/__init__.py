"""The procedural image-caption world: scenes, rendering, captions and seeded datasets."""
from vlmlab.world.captions import QUALITY_WORDS, caption, ensemble_templates
from vlmlab.world.datasets import TASKS, WorldDataset, load, sample_scene, training_pool
from vlmlab.world.render import render_digit, render_scene, render_terrain
from vlmlab.world.scene import (BACKGROUNDS, COLOURS, COUNT_WORDS, DIGITS, POSITIONS, SHAPES, SIZES, STYLES,
                                TERRAINS, TEXTURES, Scene)

__all__ = ["TASKS", "WorldDataset", "load", "sample_scene", "training_pool", "caption", "QUALITY_WORDS", "ensemble_templates",
           "render_scene", "render_digit", "render_terrain", "Scene", "SHAPES", "COLOURS", "TEXTURES", "SIZES",
           "COUNT_WORDS", "POSITIONS", "BACKGROUNDS", "STYLES", "DIGITS", "TERRAINS"]
