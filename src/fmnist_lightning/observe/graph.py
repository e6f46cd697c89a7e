"""The network's graph in TensorBoard's GRAPHS tab, drawn from ``torch.fx`` instead of ``torch.jit.trace``.

Lightning's ``TensorBoardLogger(log_graph=True)`` draws the graph through torch's ``SummaryWriter.add_graph``, a
``torch.jit.trace`` of the model, which torch 2.14 deprecates with two ``FutureWarning``s on every ``fit``. The CLI
turns that off and adds ``NetworkGraph`` in its place (``fmnist_lightning.commands.cli``), which reads the
network's layers symbolically (``torch.fx``: every layer without sub-layers is a node, so the layers of
``networks.keras_layers`` need not be traceable inside) and their output shapes from one forward pass of the model's
example input in eval mode, without gradients.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from tensorboard.compat.proto.attr_value_pb2 import AttrValue
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.graph_pb2 import GraphDef
from tensorboard.compat.proto.node_def_pb2 import NodeDef
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.versions_pb2 import VersionDef
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from fmnist_lightning.lightning_private import tensorboard_file_writer
from fmnist_lightning.observe.evaluation import tensorboard_logger


class _LayerTracer(fx.Tracer):
    """A node per layer: torch's own modules and any module without sub-modules are not traced into."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return super().is_leaf_module(module, qualified_name) or next(module.children(), None) is None


def _shapes(meta: Any) -> list[TensorShapeProto]:
    """The output shapes that ``ShapeProp`` recorded for a node (``TensorMetadata``, a tuple of them) or a tensor's."""
    found = (meta,) if hasattr(meta, "shape") else meta if isinstance(meta, (tuple, list)) else ()
    return [
        TensorShapeProto(dim=[TensorShapeProto.Dim(size=size) for size in item.shape])
        for item in found
        if hasattr(item, "shape")
    ]


def network_graph(net: nn.Module, example: torch.Tensor, scope: str, preprocess: str | None = None) -> GraphDef:
    """The graph of ``net`` as TensorBoard draws it: node names are scoped by ``/`` (``LeNet5/net/0``), an edge
    carries the shape of the tensor along it. ``preprocess`` names an operation before the network (e.g. the
    model's standardisation)."""
    graph = _LayerTracer().trace(net)
    module = fx.GraphModule(net, graph)
    modes = {layer: layer.training for layer in net.modules()}
    try:
        net.eval()
        with torch.no_grad():
            ShapeProp(module).propagate(example)
    except Exception:  # the graph without shapes is still the graph
        pass
    finally:
        for layer, training in modes.items():
            layer.training = training
    shape = AttrValue(list=AttrValue.ListValue(shape=_shapes(example)))
    nodes = [NodeDef(name="input", op="IO Node", attr={"_output_shapes": shape})]
    if preprocess is not None:  # elementwise: the input's shape
        nodes.append(NodeDef(name=f"{scope}/{preprocess}", op=preprocess, input=["input"], attr=nodes[0].attr))
    names: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op == "placeholder":  # the network's input: the model's input, or what preprocessing made of it
            names[node] = nodes[-1].name
            continue
        attributes: dict[str, AttrValue] = {}
        if node.op == "output":
            name, op = "output", "IO Node"
        elif node.op == "call_module":
            layer = net.get_submodule(str(node.target))
            name, op = f"{scope}/net/{str(node.target).replace('.', '/')}", type(layer).__name__
            attributes["layer"] = AttrValue(s=repr(layer).encode())
        else:  # a function, method or attribute inside a block: named in the block's scope
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            within = stack[-1][0].replace(".", "/") + "/" if stack else ""
            name, op = f"{scope}/net/{within}{node.name}", getattr(node.target, "__name__", str(node.target))
        shapes = _shapes(node.meta.get("tensor_meta"))
        if shapes:
            attributes["_output_shapes"] = AttrValue(list=AttrValue.ListValue(shape=shapes))
        names[node] = name
        nodes.append(NodeDef(name=name, op=op, input=[names[n] for n in node.all_input_nodes], attr=attributes))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))


class NetworkGraph(L.Callback):
    """Writes the network's graph into the run's TensorBoard events when ``fit`` starts (rank 0; not again when a
    fit resumes the run, whose events hold it already)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        net = getattr(pl_module, "net", None)
        example = pl_module.example_input_array
        if logger is None or trainer.ckpt_path is not None or not isinstance(net, nn.Module):
            return
        if not isinstance(example, torch.Tensor):
            return
        standardize = bool(getattr(pl_module, "standardize", False))
        try:
            graph = network_graph(
                net, example.to(pl_module.device), type(pl_module).__name__, "standardize" if standardize else None
            )
        except Exception as error:  # a network torch.fx cannot read: the run goes on without its graph
            rank_zero_warn(f"no graph in TensorBoard: torch.fx cannot trace {type(net).__name__} ({error})")
            return
        tensorboard_file_writer(logger).add_event(Event(graph_def=graph.SerializeToString()))
