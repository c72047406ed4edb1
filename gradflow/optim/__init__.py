"""gradflow.optim: SGD, Adam, AdamW and learning-rate schedulers, with PyTorch's update rules."""
from gradflow.optim import lr_scheduler
from gradflow.optim.adam import Adam, AdamW
from gradflow.optim.optimizer import Optimizer
from gradflow.optim.sgd import SGD

__all__ = ["Adam", "AdamW", "Optimizer", "SGD", "lr_scheduler"]
