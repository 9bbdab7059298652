"""The entry points (``train``, ``evaluate``, ``prepare``, ``score``, ``calibrate``, ``export``) and what only they
need: ``cli`` (run_hydra, run folders, logs), ``overrides`` (the command line checked before Hydra runs),
``config_search`` (where the configs are found: ``pkg://vad.conf`` and a user's folder), ``build`` (factories),
``stages`` (after training: the checkpoint's calibration, the checkpoint to test, the test and its report),
``callbacks``, ``runs`` and ``sweep`` (multirun folders and summaries).

May import everything below it (inference, reporting, methods, evaluation, data, nets, flow, core). An entry point
imports no other entry point: what two of them share lives in ``cli``, ``build`` or ``stages``.
"""
