"""What commands and users share about runs: their folders and ``--ckpt_path`` (``folders``), the one safe way to
read a checkpoint (``checkpoints``) and a checkpoint as a model (``loading.load``, ``fmnist_lightning.load``).

Library code, not commands: it imports nothing of ``commands``. Nothing is imported here, so that ``compare``, which
reads run folders, needs no torch.
"""
