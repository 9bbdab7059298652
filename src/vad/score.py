"""``python -m vad.score`` and ``vad-score``: see :mod:`vad.app.score`."""

from vad.app.score import main

if __name__ == "__main__":
    main()
