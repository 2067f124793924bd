"""protoc's output for service/grpc/proto (python -m service.grpc.codegen); not edited by hand."""
