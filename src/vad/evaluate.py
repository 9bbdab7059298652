"""``python -m vad.evaluate`` and ``vad-eval``: see :mod:`vad.app.evaluate`."""

from vad.app.evaluate import main

if __name__ == "__main__":
    main()
