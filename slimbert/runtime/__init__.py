"""Open stored artifacts in their runtime: pruned torch checkpoints, ONNX Runtime sessions, NF4, Inductor.

The one low floor that both ``compression/`` (which makes and checks artifacts) and ``inference/``
(which serves them) import; it imports neither.
"""
