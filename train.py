"""python train.py fit --config configs/blobs_mlp.yaml   (also validate, test, predict; --help)"""

import signal
import sys

# Importing torch and Lightning takes seconds: a Ctrl-C or SIGTERM then ends quietly (130 / 143).
for _signal in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signal, lambda signum, frame: sys.exit(128 + signum))

from toyloops.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
