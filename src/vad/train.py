"""``python -m vad.train`` and ``vad-train``: see :mod:`vad.app.train`."""

from vad.app.train import main

if __name__ == "__main__":
    main()
