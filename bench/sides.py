"""Building the same data on both sides (gradflow and PyTorch) and reading it back."""
import importlib

import numpy as np

from bench.harness import NotAvailable


def gradflow_functional(*names):
    """gradflow.functional, after checking the named ops exist (NotAvailable if not yet)."""
    import gradflow.functional as F
    for name in names:
        try:
            getattr(F, name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("gradflow"):
                raise NotAvailable(f"F.{name}: {exc.name} does not exist yet") from None
            raise
        except (AttributeError, ImportError) as exc:
            raise NotAvailable(f"F.{name}: {exc}") from None
    return F


def gradflow_module(dotted, *attributes):
    """Import a gradflow module (e.g. gradflow.nn) and check attributes; NotAvailable if missing."""
    try:
        module = importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("gradflow"):
            raise NotAvailable(f"{dotted}: {exc.name} does not exist yet") from None
        raise
    missing = [a for a in attributes if not hasattr(module, a)]
    if missing:
        raise NotAvailable(f"{dotted} lacks {', '.join(missing)}")
    return module


def to_gradflow(array, device, requires_grad=False):
    import gradflow as gf
    return gf.tensor(array, device=device, requires_grad=requires_grad)


def to_torch(array, device, requires_grad=False):
    import torch
    return torch.tensor(array, device=device, requires_grad=requires_grad)


def to_numpy(tensor):
    """A gradflow or torch tensor as a numpy array (float64 kept, no grad)."""
    if tensor is None:
        return None
    if hasattr(tensor, "cpu") and type(tensor).__module__.startswith("torch"):
        return tensor.detach().cpu().numpy()
    from gradflow import backend
    return np.asarray(backend.to_numpy(tensor.data))


def torch_setup(device, threads):
    """Thread count and float32 semantics on the PyTorch side; returns the settings used."""
    import torch
    torch.set_num_threads(threads)
    info = {"torch_threads": torch.get_num_threads()}
    if device == "cuda":
        # Compare float32 with float32: no TF32 tensor-core shortcuts on the torch side
        # (cuDNN convolutions allow TF32 by default; CuPy's matmul does not use it).
        if hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        info.update(cudnn_enabled=torch.backends.cudnn.enabled,
                    cudnn_benchmark=torch.backends.cudnn.benchmark, tf32=False)
    return info
