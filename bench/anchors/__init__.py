"""The anchors: MLServer, KServe's model server and Triton (through PyTriton), each run from its own
virtual environment on the benchmark's ONNX file.

The modules named after a server (`mlserver_model`, `kserve_server`, `pytriton_server`) run inside
that server's environment and import nothing from this project; `specs` and `setup` run in the
project's. This file stays empty of imports so that the anchors' environments can import their module.
"""
