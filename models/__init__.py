"""Segmentation models and the training CLI built on gradflow (not part of the installed package).

    python models/fcn.py                 # train the FCN on the built-in shapes dataset
    python models/fcn.py --help          # train / eval / predict options
    python models/unet.py                # the same CLI with --model unet as default

Modules: layers (conv-norm-ReLU blocks), fcn (FCN-8s), unet (U-Net), train (the
training loop, evaluation, run artefacts), state (resumable checkpoints), plots
(curves and prediction panels), cli (argparse front end).
"""
