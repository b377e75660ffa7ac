"""relu_into_branches: a Relu after a channel Concat runs on each of the Concat's inputs instead.

MixNet-M/L's ReLU blocks put their activation after the MixConv's Concat. In int8 TFLite that is
a RELU of its own whose output scale differs from its input's; XNNPACK only takes a quantized
clamp with equal scales, so LiteRT's builtin kernel runs it: 3.5-4.5 ms of MixNet-M/L's 9-11 ms at
224 (measured in benchmarks/results/latency_224.md). Relu is elementwise, so
Relu(Concat(a, b, c)) = Concat(Relu(a), Relu(b), Relu(c)) exactly; each branch's Relu then fuses
into the conv or Add that produces it (a fused activation, no op of its own).
"""

from __future__ import annotations

import onnx_ir as ir

from mixdeploy.onnx.graph import Namer, attr, is_channel_axis, new_node, only_use, replace_value
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions


def relu_into_branches(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome()
    concats = [n for n in graph if n.op_type == "Concat"]
    if not concats:
        outcome.decline(GRAPH, "no Concat in the graph")
    for concat in concats:
        joined = concat.outputs[0]
        relu = only_use(joined)
        if relu is None or relu.op_type != "Relu" or joined.is_graph_output():
            outcome.decline(concat.name, "not read by one Relu alone")
            continue
        if not is_channel_axis(attr(concat, "axis", 0)):
            outcome.decline(concat.name, "concatenates another axis than channels")
            continue
        for i, branch in enumerate(list(concat.inputs)):
            branch_relu = new_node(namer, f"{relu.name}/branch{i}", "Relu", [branch])
            graph.insert_before(concat, branch_relu)
            concat.replace_input_with(i, branch_relu.outputs[0])
        replace_value(relu.outputs[0], joined)
        graph.remove(relu, safe=True)
        outcome.touched.append(concat.name)
    return outcome
