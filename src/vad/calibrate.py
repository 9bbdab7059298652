"""``python -m vad.calibrate`` and ``vad-calibrate``: see :mod:`vad.app.calibrate`."""

from vad.app.calibrate import main

if __name__ == "__main__":
    main()
