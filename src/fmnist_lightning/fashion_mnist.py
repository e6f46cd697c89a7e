"""Fashion-MNIST's facts that every part of the project shares: its classes and its pixel statistics.

Written out (torchvision's ``FashionMNIST.classes`` holds the same names; tests/test_data.py compares) so that
this leaf module imports nothing heavy.
"""

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
# Mean and std of the 60k training pixels scaled to [0, 1]: a model's ``standardize`` option subtracts and divides.
MEAN, STD = 0.2860, 0.3530
