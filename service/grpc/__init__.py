"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService, as Triton and KServe's
clients speak it): the same V2 objects, data plane, batcher and limits as the HTTP API, served
by grpc.aio on the same event loop (frontend.py), with the standard health and reflection services."""
