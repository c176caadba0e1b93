"""python train.py fit --config configs/blobs_mlp.yaml   (also validate, test, predict; --help)"""

from toyloops.engine.entry import stop_quietly_until_started

# Importing torch and Lightning takes seconds: a Ctrl-C or SIGTERM then ends in one line (130 / 143).
stop_quietly_until_started()

from toyloops.engine.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
