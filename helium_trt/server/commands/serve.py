"""`helium-trt serve`: the helium.v1 gRPC service (with health and reflection) on the embedded
CPU engine, or on Triton endpoints serving the tensorrt_llm tensor contract (`--engine triton
--url HOST:PORT`, repeatable: each URL is one worker for the scheduler's placement), or on
OpenAI-compatible completions servers such as vLLM (`--engine openai --url HOST:PORT`,
repeatable likewise). Several models may be served at once, routed by name: `--model NAME=DIR`
(repeatable, the first is the default) and `--url NAME=HOST:PORT` / `--triton-model NAME=MODEL`;
an LLM operator's `model` picks one (see docs/models.md)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from helium_trt.errors import HeliumError
from helium_trt.runtime.models import ModelSet, ServedModel
from helium_trt.server.commands.engine_flags import add_engine_flags, describe, engine_runtime
from helium_trt.server.commands.model_flags import (
    MODEL_HELP, ModelFlag, parse_models, triton_models, urls_by_model,
)
from helium_trt.server.commands.observe_flags import Observability, add_observe_flags
from helium_trt.server.commands.security_flags import (
    add_security_flags, open_security, publish_workflows, sighup_handler,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="start the helium.v1 gRPC service",
                              description=__doc__)
    p.add_argument("--address", default="127.0.0.1:50051",
                   help="host:port to listen on (default 127.0.0.1:50051; port 0 picks one)")
    p.add_argument("--engine", choices=("embedded", "triton", "openai"), default="embedded",
                   help="embedded CPU engine (default), Triton tensorrt_llm endpoints, or "
                   "OpenAI-compatible completions servers (vLLM ...), streamed")
    p.add_argument("--model", action="append", metavar="[NAME=]DIR", help=MODEL_HELP)
    p.add_argument("--workers", type=int, default=1,
                   help="embedded engines per model, sharing one copy of its weights (default 1)")
    p.add_argument("--url", action="append", default=[], metavar="[NAME=]HOST:PORT",
                   help="Triton gRPC endpoint with --engine triton, or OpenAI-compatible server "
                   "with --engine openai (repeatable: each is one worker of model NAME, or of "
                   "the default model without NAME=)")
    p.add_argument("--triton-model", action="append", metavar="[NAME=]MODEL",
                   help="Triton model that model NAME's endpoints serve (repeatable; without "
                   "NAME=: every model's without its own; default tensorrt_llm)")
    p.add_argument("--engine-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --engine triton or openai: fail an LLM call (and cancel it on the "
                   "server) once the server has sent nothing for this long, first token included "
                   "(default 60; 0: wait forever). A Triton engine is then unhealthy until the "
                   "server answers a readiness probe")
    p.add_argument("--kv-cache-mb", type=int, default=512, help="embedded KV pool per worker")
    p.add_argument("--kv-cache-blocks", type=int, default=None, metavar="N",
                   help="embedded KV pool per worker in blocks of 16 tokens (overrides "
                   "--kv-cache-mb; for small models, where a MB holds hundreds of blocks)")
    p.add_argument("--max-rows", type=int, default=1024, help="rows per request limit")
    p.add_argument("--max-ops", type=int, default=2048, help="operators per request limit")
    p.add_argument("--max-message-mb", type=int, default=64, help="gRPC message size limit")
    p.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                   help="prompt tokens per LLM call limit (default: the engine's context window)")
    p.add_argument("--max-value-bytes", type=int, default=1 << 20, metavar="N",
                   help="bytes of one row value limit (default 1 MiB)")
    p.add_argument("--max-rows-bytes", type=int, default=16 << 20, metavar="N",
                   help="bytes of all of a request's rows limit (default 16 MiB)")
    p.add_argument("--max-prompt-bytes", type=int, default=4 << 20, metavar="N",
                   help="bytes of one rendered prompt or formatted value, checked before "
                   "tokenizing (default 4 MiB)")
    p.add_argument("--max-calls", type=int, default=4096, metavar="N",
                   help="LLM calls per request limit, list fan-out included (default 4096)")
    p.add_argument("--tool-call-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long a Session's tool call waits for the client's result before "
                   "its row fails with DEADLINE_EXCEEDED (default 300; 0: no limit); a request's "
                   "tool_call_timeout_ms may only shorten it")
    p.add_argument("--unhealthy-exit", type=float, default=60.0, metavar="SECONDS",
                   help="exit with status 3 once an engine has been unhealthy this long without "
                   "a break (default 60; 0: never). A failed embedded engine fails its requests, "
                   "restarts itself and is back within about a second once the fault is gone; "
                   "gRPC health says NOT_SERVING meanwhile")
    add_security_flags(p)
    add_observe_flags(p)
    add_engine_flags(p)
    p.add_argument("--port-file", metavar="PATH",
                   help="write the bound port here once serving (for scripts and tests)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except HeliumError as exc:
        print(f"helium-trt serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


async def open_engines(args: argparse.Namespace, wrap=lambda engines: engines) -> ModelSet:
    """The models ``args`` ask for, by name (the first --model is the default): each with its
    embedded workers sharing one copy of its weights, or one TritonEngine / OpenAI engine per
    --url of it. ``wrap`` is applied to each model's engine list (metrics)."""
    from helium_trt.errors import InvalidWorkflowError

    models = parse_models(args.model)
    if args.engine_timeout < 0:
        raise InvalidWorkflowError("must be 0 (no timeout) or more seconds",
                                   field="--engine-timeout")
    if args.engine == "embedded":
        return ModelSet([ServedModel(m.name, tuple(wrap(_embedded(args, m)))) for m in models])
    urls = urls_by_model(args.url, models, args.engine)
    served = []
    if args.engine == "openai":
        from helium_trt.engine.openai import connect_endpoints

        for m in models:
            engines = await connect_endpoints(urls[m.name], m.model_dir,
                                              args.engine_timeout or None)
            served.append(ServedModel(m.name, tuple(wrap(engines))))
        return ModelSet(served)
    from helium_trt.engine.triton.client import TritonEngine, TritonEngineConfig

    triton_names = triton_models(args.triton_model, models)
    for m in models:
        engines = [await TritonEngine.connect(TritonEngineConfig(
            url=u, tokenizer_dir=str(m.model_dir), model_name=triton_names[m.name],
            idle_timeout_s=args.engine_timeout or None)) for u in urls[m.name]]
        served.append(ServedModel(m.name, tuple(wrap(engines))))
    return ModelSet(served)


def _embedded(args: argparse.Namespace, model: ModelFlag) -> list:
    from helium_trt.engine.config import EngineConfig
    from helium_trt.engine.embedded.engine import EmbeddedEngine

    config = EngineConfig(model_dir=str(model.model_dir), kv_cache_mb=args.kv_cache_mb,
                          num_blocks=args.kv_cache_blocks,
                          **engine_runtime(args))
    first = EmbeddedEngine(config)
    print(f"helium-trt serve: model {model.name!r} ({model.model_dir}): {describe(first)} per "
          "worker", file=sys.stderr, flush=True)
    return [first] + [EmbeddedEngine(config, model=first.model) for _ in range(args.workers - 1)]


async def _serve(args: argparse.Namespace) -> int:
    from helium_trt.server.core import HeliumCore
    from helium_trt.server.grpc_service import ServerLimits, start_server
    from helium_trt.server.health import HealthPolicy

    limits = ServerLimits(max_rows=args.max_rows, max_ops=args.max_ops,
                          max_message_bytes=args.max_message_mb << 20,
                          max_prompt_tokens=args.max_prompt_tokens,
                          max_value_bytes=args.max_value_bytes, max_rows_bytes=args.max_rows_bytes,
                          max_prompt_bytes=args.max_prompt_bytes, max_calls=args.max_calls,
                          tool_call_timeout_s=args.tool_call_timeout or None)
    tls, tokens = open_security(args)
    observe = Observability(args)
    core = HeliumCore(await open_engines(args, observe.wrap), limits=limits)
    observe.attach(core)
    await publish_workflows(core, args.public_workflow)
    stop = asyncio.Event()
    gave_up: list[str] = []

    def give_up(reason: str) -> None:
        gave_up.append(reason)
        stop.set()

    server, port = await start_server(core, args.address, limits,
                                      HealthPolicy(give_up_after_s=args.unhealthy_exit or None),
                                      give_up, tls=tls, tokens=tokens)
    host = args.address.rsplit(":", 1)[0]
    print(f"helium-trt: serving helium.v1.HeliumService on {host}:{port} "
          f"({args.engine} engine, {len(core.engines)} worker(s), models "
          f"{', '.join(core.models.names)} (default {core.models.default}), "
          f"{'TLS' if tls else 'plaintext'}{', mutual TLS' if tls and tls.client_ca else ''}, "
          f"{'bearer tokens' if tokens else 'no auth'})", file=sys.stderr, flush=True)
    if args.port_file:
        Path(args.port_file).write_text(f"{port}\n")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reload = sighup_handler(core, tokens, args.public_workflow)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await server.stop(grace=2.0)
    await core.close()
    observe.close()
    if gave_up:
        print(f"helium-trt serve: giving up, exiting with status 3: {gave_up[0]}",
              file=sys.stderr, flush=True)
        return 3
    return 0
