"""logitrec.admin.v1.ModelAdminService: list, load and unload model versions while serving.

For operators, not end users: once the gateway authenticates callers, this service sits behind
the admin role. Until then, serve it only on a port that operators alone can reach, or turn it
off (`--no-admin`). The changes themselves are serving.lifecycle's; errors become statuses in
one place (serving.errors.status_of), as in serving/service.py.
"""

import asyncio
import logging
import re

import grpc
from logitrec_client.proto import admin_pb2 as pb
from logitrec_client.proto import admin_pb2_grpc

from serving.auth import CALLER
from serving.engine import Engine
from serving.errors import InvalidRequest, quote, status_of
from serving.registry import ModelVersion

log = logging.getLogger("logitrec.gateway")
# What export accepts as a model name: it becomes folder names, so nothing that walks paths.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _model(name: str) -> str:
    if name and not MODEL_NAME.fullmatch(name):
        raise InvalidRequest(
            "model", f"expected letters, digits, '_', '-' or '.' (at most 128), got {quote(name)}"
        )
    return name


def _loaded(model: ModelVersion, newest: int) -> pb.LoadedVersion:
    return pb.LoadedVersion(
        version=model.version, num_items=model.num_items, default_version=model.version == newest
    )


class ModelAdminService(admin_pb2_grpc.ModelAdminServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lifecycle = engine.lifecycle

    async def _answer(self, method: str, context: grpc.aio.ServicerContext, work):
        """Run `work`; every call leaves an audit line naming its caller (the token's name)."""
        caller = CALLER.get() or "anonymous"
        audit = {"method": method, "caller": caller}
        try:
            response = await work
        except Exception as error:
            code, message, _ = status_of(error)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("admin %s by %s failed", method, caller, extra=audit)
            else:
                log.info("admin %s by %s refused: %s (%s)", method, caller, message, code.name,
                         extra=audit)  # fmt: skip
            await context.abort(code, message)
        log.info("admin %s by %s: OK", method, caller, extra=audit)
        return response

    # -- RPCs -------------------------------------------------------------------------------
    async def ListModels(self, request, context):
        return await self._answer("ListModels", context, self._list())

    async def LoadModel(self, request, context):
        return await self._answer("LoadModel", context, self._load(request))

    async def UnloadModel(self, request, context):
        return await self._answer("UnloadModel", context, self._unload(request))

    # -- implementations --------------------------------------------------------------------
    async def _list(self) -> pb.ListModelsResponse:
        models = []
        for state in await self.lifecycle.states():
            newest = state.loaded[-1].version if state.loaded else 0
            models.append(
                pb.ModelStatus(
                    name=state.name,
                    default_model=state.default_model,
                    loaded_versions=[_loaded(m, newest) for m in state.loaded],
                    available_versions=state.available,
                )
            )
        return pb.ListModelsResponse(models=models)

    async def _load(self, request: pb.LoadModelRequest) -> pb.LoadModelResponse:
        name = _model(request.model)
        if request.version < 0:
            raise InvalidRequest(
                "version", f"expected >= 0 (0: the newest complete one), got {request.version}"
            )
        # Shielded: a caller that gives up must not leave a version half loaded.
        outcome = await asyncio.shield(self.lifecycle.load(name, request.version))
        model = outcome.model
        newest = self.engine.registry.versions(model.name)[-1]
        return pb.LoadModelResponse(
            model=model.name,
            loaded=_loaded(model, newest),
            already_loaded=outcome.already_loaded,
            unloaded_versions=outcome.unloaded,
        )

    async def _unload(self, request: pb.UnloadModelRequest) -> pb.UnloadModelResponse:
        name = _model(request.model)
        if request.version <= 0:
            raise InvalidRequest(
                "version", f"expected the loaded version to unload (> 0), got {request.version}"
            )
        left = await asyncio.shield(self.lifecycle.unload(name, request.version))
        return pb.UnloadModelResponse(
            model=name or self.engine.registry.default_model, loaded_versions=left
        )
