"""The model contract and the model store, shared by the service and the trainers.

`spec` (input, outputs, architectures), `metadata` (what a model file says of itself),
`validation` (is this file a contract model?) and `store` (the models/<name>/<version>/model.onnx
layout, discovery and atomic writes). Imports nothing from `service` or `training`.
"""
