"""What float32 arithmetic may use on a CUDA GPU: the model's ``float32_matmul_precision`` option."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info

MATMUL_PRECISIONS = {"highest": "in float32", "high": "on TF32 tensor cores", "medium": "on bfloat16 tensor cores"}


def use_float32_matmul_precision(precision: str, device: torch.device) -> None:
    """``torch.set_float32_matmul_precision(precision)`` for a CUDA ``device``, said once (when it changes).

    A process-wide setting, so a CPU run leaves it alone: CPU results and the Keras parity keep true float32 whatever
    the option says. On CUDA, cuDNN's convolutions already use TF32 by torch's default; the line says so too.
    """
    if device.type != "cuda" or torch.get_float32_matmul_precision() == precision:
        return
    torch.set_float32_matmul_precision(precision)
    convolutions = "TF32" if torch.backends.cudnn.allow_tf32 else "float32"
    rank_zero_info(
        f"float32 on {torch.cuda.get_device_name(device)}: matmuls {MATMUL_PRECISIONS[precision]} "
        f"(--model.init_args.float32_matmul_precision {precision}), convolutions {convolutions}"
    )
