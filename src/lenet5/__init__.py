"""LeNet-5 on MNIST: a from-scratch NumPy engine and a PyTorch engine behind one CLI."""

__version__ = "0.1.0"

# Normalization of MNIST pixels after scaling to [0, 1]: (x - MEAN) / STD.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
