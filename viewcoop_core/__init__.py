"""The ViewCoOp method: pure PyTorch / NumPy, never imports ray."""

__version__ = "0.1.0"
