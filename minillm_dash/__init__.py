"""minillm-dash: compare knowledge-distillation loss variants side by side.

The engine (losses, variants, data, modeling, rollout, trainer, runner, db, export) imports neither
gradio nor plotly, so it runs headless and on GPU machines that only have torch and transformers.
"""

__version__ = "0.1.0"
