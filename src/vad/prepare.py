"""``python -m vad.prepare`` and ``vad-prepare``: see :mod:`vad.app.prepare`."""

from vad.app.prepare import main

if __name__ == "__main__":
    main()
