"""Training only some layers: one recipe (recipe.py) over TRL's trainers, returning a RunResult.

- config.py: `ModelConfig`, `TrainConfig` (every flag declared once, with its help and group);
  configfile.py: a config.yaml back into them.
- methods.py: the table of methods (SFT, GRPO family, RLOO, DPO, KTO), one builder per TRL trainer.
- recipe.py: check -> setup -> build trainer -> fit -> score -> save; runner.py: `train`, `resume`.
- result.py: the typed `RunResult` (metrics.json); run_dir.py: run directories and config.yaml;
  interrupt.py: Ctrl-C/SIGTERM and sealed checkpoints; precheck.py: selections checked on the
  meta device before any weight loads.
- trainable.py (what trains, the optimizer), callbacks.py, preference.py, subnetwork.py, outputs.py.
"""
