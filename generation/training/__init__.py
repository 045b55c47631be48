"""Training the bundled lip-sync models (no Django).

``dataset`` reads Wav2Lip's preprocessed layout and draws (target, reference, shifted, mel) windows;
``preprocess`` makes that layout from raw videos or the synthetic corpus; ``families`` holds one training step
per model family (the losses of its paper); ``trainer`` runs a family for N iterations with exact resume,
CSV curves and checkpoints; ``plots`` draws the curves. ``manage.py train CONFIG.toml`` runs it all.
"""
