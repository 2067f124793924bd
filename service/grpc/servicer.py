"""inference.GRPCInferenceService: the Open Inference Protocol's gRPC methods and Triton's model
repository extension, each one call into the data plane (or the repository) as over HTTP. Errors
are ServiceErrors, turned into gRPC statuses by the interceptor; methods this server does not
offer (statistics, shared memory, tracing, logging) answer UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from google.protobuf import json_format

from service.batching import BatchResult
from service.config import Settings
from service.dataplane import DataPlane
from service.errors import BadRequest, NotFound, ServiceUnavailable
from service.grpc import codec
from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from service.grpc.generated import model_config_pb2
from service.grpc.status import DeadlineExceeded
from service.protocol.v2 import metadata, model_io
from service.registry import ModelVersion
from service.repository import ModelRepository, authorize

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
AUTHORIZATION = "authorization"


def model_name(name: str) -> str:
    if not name:
        raise BadRequest("model name is empty: name the model to use")
    return name


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else None
    return None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, repository: ModelRepository, settings: Settings) -> None:
        self.plane = plane
        self.repository = repository
        self.settings = settings
        self._check = model_io.input_check(settings.max_images_per_request)

    # ---- health and metadata ---------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        """ready=false for a model that is unknown (HTTP: 404) or cannot serve (HTTP: 503): the
        clients' is_model_ready returns False for both over HTTP, and so it does here."""
        try:
            self.plane.resolve(model_name(request.name), request.version or None)
        except (NotFound, ServiceUnavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**metadata.server(self.settings))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        """GET /v2/models/{name}'s document, less `parameters` (the gRPC message has no such field)."""
        described = metadata.model(self.plane.describe(self.plane.resolve(model_name(request.name), request.version or None)))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=described["name"], versions=described["versions"], platform=described["platform"],
            inputs=[tensor(**spec) for spec in described["inputs"]],
            outputs=[tensor(**spec) for spec in described["outputs"]])

    async def ModelConfig(self, request: pb.ModelConfigRequest,
                          context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        """GET /v2/models/{name}/config's document as Triton's ModelConfig message."""
        described = self.plane.describe(self.plane.resolve(model_name(request.name), request.version or None))
        return pb.ModelConfigResponse(config=json_format.ParseDict(metadata.model_config(described, self.settings),
                                                                   model_config_pb2.ModelConfig()))

    # ---- inference ---------------------------------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        model = self.plane.resolve(model_name(request.model_name), request.model_version or None)
        inference = codec.from_grpc(request, self._check)
        outputs = model_io.requested_outputs(inference, model.outputs)
        batch = model_io.request_batch(inference)
        result = await self._infer(model, batch, [output.name for output in outputs], context)
        response = model_io.response(model.name, model.version, inference, outputs, result.outputs)
        return codec.to_grpc(response, codec.raw_outputs_wanted(request, inference))

    async def _infer(self, model: ModelVersion, batch: np.ndarray, outputs: Sequence[str],
                     context: grpc.aio.ServicerContext) -> BatchResult:
        """Through the data plane, within the caller's deadline: grpc.aio cancels this call's task
        when the deadline passes, and the batcher drops a cancelled request that is still queued."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before the request was queued")
        return await self.plane.infer(model, batch, outputs)

    # ---- the model repository (Triton's extension) ------------------------------------------
    def _authorized(self, context: grpc.aio.ServicerContext) -> ModelRepository:
        authorize(self.settings, metadata_value(context, AUTHORIZATION))
        return self.repository

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: grpc.aio.ServicerContext) -> pb.RepositoryIndexResponse:
        repository = self._authorized(context)
        _one_repository(request.repository_name)
        entries = [entry for entry in repository.index() if not request.ready or entry["state"] == "READY"]
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: grpc.aio.ServicerContext) -> pb.RepositoryModelLoadResponse:
        repository = self._authorized(context)
        _one_repository(request.repository_name)
        _no_parameters(request.parameters, "RepositoryModelLoad")
        await repository.load(model_name(request.model_name))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: grpc.aio.ServicerContext) -> pb.RepositoryModelUnloadResponse:
        repository = self._authorized(context)
        _one_repository(request.repository_name)
        # tritonclient always sends unload_dependents; there are no dependents (no ensembles) to unload
        _no_parameters({key: value for key, value in request.parameters.items() if key != "unload_dependents"},
                       "RepositoryModelUnload")
        await repository.unload(model_name(request.model_name))
        return pb.RepositoryModelUnloadResponse()


def _one_repository(name: str) -> None:
    if name:
        raise BadRequest(f"repository {name!r}: this server has one model repository; leave repository_name empty")


def _no_parameters(parameters: Mapping[str, object], method: str) -> None:
    """Triton's load parameters override the model's configuration or files; this server reads
    both from the models directory only, so a call that asks for overrides is refused, not ignored."""
    if parameters:
        keys = ", ".join(sorted(parameters))
        raise BadRequest(f"{method}: parameters ({keys}) are not supported; the model is read from the models "
                         "directory")
