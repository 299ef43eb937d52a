"""Headless trainer: ``train(config) -> TrainResult``, the ``vitruvian-train`` CLI, and objectives.

Nothing heavy is imported here; diffusers and peft load when training starts.
"""
