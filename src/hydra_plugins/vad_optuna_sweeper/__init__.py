"""vad's Optuna sweeper for Hydra (``hydra/sweeper=vad_optuna``); see :mod:`.sweeper`."""
