"""The Open Inference Protocol (KServe V2): typed requests and responses, datatypes, the REST
body codec with Triton's binary tensor extension. Shared by the HTTP and gRPC front ends."""
