"""``python -m numpyro_rbm``: the same as the ``numpyro-rbm`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
