"""The protocols' request and response objects, apart from any transport: `v1` (this service's
JSON API) and `v2` (the Open Inference Protocol, shared by the HTTP and gRPC front ends)."""
