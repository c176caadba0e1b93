"""python train.py fit --config configs/blobs_mlp.yaml   (also validate, test, predict; --help)"""

from toyloops.cli import main

if __name__ == "__main__":
    main()
