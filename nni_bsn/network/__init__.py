"""One fixed network, once an architecture is chosen: training it from scratch with the jobs' recipe
(``training``: the SGD-with-milestones module, the step timer, the quiet CPU trainer), evaluating it (``evaluation``:
BatchNorm re-estimation, accuracy, fine-tuning, whether the output depends on the input), and exporting it
(``export``: freeze and load weights, ONNX with a parity check in ONNX Runtime, measured latency).
"""
