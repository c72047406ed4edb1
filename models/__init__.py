"""Segmentation models and the training CLI built on gradflow (not part of the installed package).

    python models/fcn.py                 # train the FCN on the built-in shapes dataset
    python models/fcn.py --help          # train / eval / predict options
    python models/unet.py                # the same CLI with --model unet as default

Modules, by concern (the shape of torchvision's reference scripts):
  fcn, unet, layers   the networks and their conv-norm-ReLU blocks
  config              Config (one field per option), the choices, each model's default recipe
  factories           model, device, data, augmentation, loss, optimizer, scheduler from a Config
  train               the engine: train_step, train_one_epoch, evaluate, predict
  trainer             Trainer: a run's state, checkpoints, the epoch loop, run artefacts
  checkpoints         what a checkpoint holds besides weights; loading one back
  utils               non-finite checks, JSON, metric tables, the progress bar
  plots               curves.png and predictions.png
  cli, commands/      the command line: `main` and one module per subcommand (train, eval, predict)
"""
