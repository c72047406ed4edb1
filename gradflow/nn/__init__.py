"""gradflow.nn: Module, Parameter, layers, losses, init and gradient utilities (PyTorch's names)."""
from gradflow.nn import functional, init, parallel, utils
from gradflow.nn.activation import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from gradflow.nn.container import ModuleDict, ModuleList, Sequential
from gradflow.nn.conv import Conv2d, ConvTranspose2d
from gradflow.nn.dropout import Dropout, Dropout2d
from gradflow.nn.linear import Identity, Linear
from gradflow.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, NLLLoss
from gradflow.nn.module import Module, Parameter
from gradflow.nn.norm import BatchNorm2d, GroupNorm
from gradflow.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from gradflow.nn.resize import Flatten, Upsample

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BCEWithLogitsLoss", "BatchNorm2d", "Conv2d", "ConvTranspose2d",
    "CrossEntropyLoss", "Dropout", "Dropout2d", "Flatten", "GroupNorm", "Identity", "Linear", "LogSoftmax",
    "MaxPool2d", "Module", "ModuleDict", "ModuleList", "NLLLoss", "Parameter", "ReLU", "Sequential", "Sigmoid",
    "Softmax", "Tanh", "Upsample", "functional", "init", "parallel", "utils",
]
