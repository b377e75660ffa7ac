"""ONNX stage: export (export.py), loading with clear errors (here), rewrite passes (rewrite.py)."""

from __future__ import annotations

from pathlib import Path

import onnx

from mixdeploy.errors import MixdeployError


def load_onnx(path, input_size: int | None = None) -> onnx.ModelProto:
    """Load and validate an ONNX classifier with a static 1x3xHxW-style input.

    `input_size` pins a dynamic spatial size (the CLI's --input-size); a dynamic batch
    dimension is fine and left alone.
    """
    path = Path(path)
    if not path.is_file():
        raise MixdeployError(f"{path}: no such file. Pass the path of an .onnx model (see `mixdeploy export`).")
    if path.stat().st_size == 0:
        raise MixdeployError(f"{path} is empty. Re-export the model with `mixdeploy export`.")
    try:
        # onnx.load (not load_from_string): big exports keep weights in a side file (.onnx.data)
        model = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and friends
        raise MixdeployError(f"{path} is not a readable ONNX model ({type(err).__name__}: {err}); "
                             "the file may be truncated or not ONNX. Re-export it with `mixdeploy export`.") from err
    if _damaged_names(model):
        raise MixdeployError(f"{path} is damaged: names in its graph are not text ({_damaged_names(model)[0]!r}); "
                             "the file may be truncated or corrupt. Re-export it with `mixdeploy export`.")
    if not model.graph.node:
        raise MixdeployError(f"{path} holds no ONNX graph (0 nodes); it is not an ONNX model or it is truncated. "
                             "Re-export it with `mixdeploy export`.")
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # ValidationError, and UnicodeDecodeError for a damaged name
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MixdeployError(f"{path} is not a valid ONNX model: {first[:300]}. "
                             "The file may be truncated; re-export it with `mixdeploy export`.") from err
    return _pin_spatial_shape(model, path, input_size)


def _damaged_names(model: onnx.ModelProto) -> list:
    """Names protobuf could not decode as UTF-8 (it hands them over as bytes): a damaged file."""
    graph = model.graph
    names = [graph.name, *(i.name for i in graph.initializer), *(v.name for v in graph.input),
             *(v.name for v in graph.output)]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
    return [n for n in names if not isinstance(n, str)]


def graph_inputs(model: onnx.ModelProto):
    """The real inputs of a graph (an initializer may also be listed as an input)."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _pin_spatial_shape(model: onnx.ModelProto, path: Path, input_size: int | None) -> onnx.ModelProto:
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise MixdeployError(f"{path} has {len(inputs)} inputs; mixdeploy handles image classifiers with one "
                             "NCHW image input. Re-export with a single input.")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise MixdeployError(f"{path}: input '{inputs[0].name}' has rank {len(dims)}; expected NCHW (rank 4). "
                             "Re-export the model with a 1x3xHxW input.")
    dynamic = [i for i in (2, 3) if not dims[i].HasField("dim_value") or dims[i].dim_value <= 0]
    if dynamic and input_size is None:
        names = ", ".join(dims[i].dim_param or "?" for i in dynamic)
        raise MixdeployError(f"{path}: input '{inputs[0].name}' has a dynamic spatial size ({names}); the rewrite "
                             "and the TFLite converter need a static HxW. Re-export with a static HxW "
                             "(mixdeploy export --input-size N) or pass --input-size.")
    if dynamic:
        for i in (2, 3):
            dims[i].Clear()
            dims[i].dim_value = int(input_size)
        # Intermediate shapes inferred for the old symbolic size would now be stale.
        del model.graph.value_info[:]
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as err:
            raise MixdeployError(f"{path}: cannot pin the input to {input_size}x{input_size} ({err}). "
                                 "Re-export with a static HxW.") from err
    return model
