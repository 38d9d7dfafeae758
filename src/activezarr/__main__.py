"""``python -m activezarr``: the ``activezarr`` command, for environments without its script."""

from .commands.main import main

if __name__ == "__main__":
    main(prog_name="activezarr")
