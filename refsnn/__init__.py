"""refsnn: a reference implementation, in NumPy and Numba, of attention-guided compression and
direct-input BPTT training of deep spiking neural networks.

Importing the package does no work: kernels compile (or load from Numba's on-disk cache) on
first use.
"""

__version__ = "0.1.0.dev0"
