"""The `helium` Triton model's logic: a serialized helium.v1.RunRequest in, serialized
helium.v1.RunEvents out, LLM calls through BLS to the tensorrt_llm-contract model beside it.

model_repo/helium/1/model.py only adapts Triton's request/response objects to this module; the
Python backend's utility module is passed in, never imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from google.protobuf import text_format

from helium_trt.api.helium.v1 import service_pb2
from helium_trt.api.wire import parse_message
from helium_trt.engine.triton.bls import BlsTransport
from helium_trt.engine.config import MODEL_DIR_ENV, default_model_dir
from helium_trt.engine.triton.client import TritonEngine, TritonEngineConfig
from helium_trt.errors import ModelNotFoundError
from helium_trt.server.core import HeliumCore, ServerLimits, check_limits
from helium_trt.server.tenants import Tenant, TokenTable, tenant_from_parameter


@dataclass(frozen=True, slots=True)
class HeliumModelConfig:
    """From the `helium` model's config.pbtxt parameters (environment overrides model_dir)."""

    llm_model: str = "tensorrt_llm"
    model_dir: str = ""  # tokenizer.json + config.json of the LLM's model
    request_timeout_s: float | None = None
    # serve --auth-tokens' YAML: its tenants' quotas apply here (its tokens are not read)
    tenants_file: str = ""

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], env: Mapping[str, str]) -> "HeliumModelConfig":
        timeout = params.get("request_timeout_s", "").strip()
        return cls(llm_model=params.get("llm_model", "").strip() or "tensorrt_llm",
                   model_dir=env.get(MODEL_DIR_ENV) or params.get("model_dir", "").strip(),
                   request_timeout_s=float(timeout) if timeout else None,
                   tenants_file=params.get("tenants_file", "").strip())


def llm_model_parameters(model_repository: Path, llm_model: str) -> dict:
    """The LLM model's config parameters read from its config.pbtxt beside this model, in the
    shape Triton's model-config JSON has (``{key: {"string_value": ...}}``)."""
    from tritonclient.grpc import model_config_pb2

    path = model_repository / llm_model / "config.pbtxt"
    if not path.is_file():
        raise ModelNotFoundError(f"no LLM model {llm_model!r} beside helium ({path} is missing)")
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return {key: {"string_value": value.string_value} for key, value in config.parameters.items()}


class HeliumTritonModel:
    """One instance per Triton model instance: owns the HeliumCore over a BLS TritonEngine."""

    def __init__(self, pb_utils, config: HeliumModelConfig, model_repository: Path):
        model_dir = Path(config.model_dir) if config.model_dir else default_model_dir()
        if not (model_dir / "tokenizer.json").is_file():
            raise ModelNotFoundError(f"no tokenizer.json in {str(model_dir)!r}: set the helium "
                                     f"model's model_dir parameter or ${MODEL_DIR_ENV}")
        engine_config = TritonEngineConfig(url="bls", tokenizer_dir=str(model_dir),
                                           model_name=config.llm_model,
                                           request_timeout_s=config.request_timeout_s)
        transport = BlsTransport(pb_utils, config.llm_model, config.request_timeout_s)
        params = llm_model_parameters(model_repository, config.llm_model)
        self.core = HeliumCore([TritonEngine.over(engine_config, transport, params)])
        # NOTE: read once, at model load: Triton reloads a model (and so this file) through its
        # model control API, which is the Triton way to change a model's configuration.
        self.tenants: dict[str, Tenant] | None = None
        if config.tenants_file:
            table = TokenTable.load(config.tenants_file)
            self.tenants = {tenant.name: tenant for tenant in table.tenants}

    async def serve(self, request_bytes: bytes, send: Callable[[bytes], None],
                    is_cancelled: Callable[[], bool], tenant: str | None = None) -> None:
        """Run one serialized RunRequest for ``tenant`` (the request's ``tenant`` parameter:
        its own result cache; None: the default tenant), sending each serialized RunEvent.

        Raises before any event is sent: InvalidWorkflowError (bad bytes, naming the field as
        the gRPC service does; a bad workflow or tenant name), ResourceExhaustedError (over the
        default ServerLimits, as the gRPC service applies them, or over the tenant's
        max_concurrent_runs) or PermissionDeniedError (a tenant the tenants_file does not list,
        a priority above its max_priority).
        """
        who = tenant_from_parameter(tenant, self.tenants)
        request = parse_message(request_bytes, service_pb2.RunRequest, source="input 'request'")
        check_limits(request, ServerLimits())
        events = self.core.run(request, tenant=who)
        try:
            async for event in events:
                if is_cancelled():
                    break
                send(event.SerializeToString())
        finally:
            await events.aclose()

    async def close(self) -> None:
        await self.core.close()


def parameters_of(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def from_triton_args(pb_utils, args: dict, model_config: dict) -> HeliumTritonModel:
    """Build from the ``args`` Triton passes to ``initialize``."""
    config = HeliumModelConfig.from_parameters(parameters_of(model_config), os.environ)
    repository = Path(args["model_repository"]).parent
    return HeliumTritonModel(pb_utils, config, repository)
