"""Data layer: MNIST (fetched, verified, split) and relational pair sets stored as indices."""
from .idx import read_idx, read_idx_images, read_idx_labels, write_idx
from .mnist import DATASET_SHA256, MNIST, SHA256, Split, default_data_dir, fetch_mnist, load_mnist
from .pairs import Pairs, load_pairs, make_pairs, mnist_pairs, save_pairs

__all__ = [
    "DATASET_SHA256", "MNIST", "SHA256", "Split", "Pairs", "default_data_dir", "fetch_mnist",
    "load_mnist", "load_pairs", "make_pairs", "mnist_pairs", "read_idx", "read_idx_images",
    "read_idx_labels", "save_pairs", "write_idx",
]
