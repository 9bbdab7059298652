"""``python -m vad.export`` and ``vad-export``: see :mod:`vad.app.export`."""

from vad.app.export import main

if __name__ == "__main__":
    main()
