"""``actorflow serve --otel``: the tracer provider a served runtime traces with.

OpenTelemetry's global provider if the process already has one (``opentelemetry-instrument
actorflow serve ...`` sets it), else an SDK provider configured from the standard
``OTEL_*`` environment variables; see docs/tracing.md ("actorflow serve --otel").
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

#: The span exporters ``OTEL_TRACES_EXPORTER`` may name: the module and class of each
#: (``otlp`` by ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``/``OTEL_EXPORTER_OTLP_PROTOCOL``).
EXPORTERS = {
    "otlp/http/protobuf": (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "otlp/grpc": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
}


class TracingSetupError(Exception):
    """``--otel`` cannot be set up (a package missing, an unknown exporter)."""


def serve_tracer_provider(otel: bool) -> tuple[Any, Callable[[], None]]:
    """The tracer provider for ``--otel`` (None without it), and what flushes and closes
    it at exit."""
    if not otel:
        return None, lambda: None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise TracingSetupError(
            f"--otel needs OpenTelemetry ({exc}): pip install 'actorflow[otel]'"
        ) from None
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return current, lambda: None  # configured by its owner, who flushes it
    provider = TracerProvider(shutdown_on_exit=False)  # reads OTEL_SERVICE_NAME, ...
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (part.strip().lower() for part in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            raise TracingSetupError(
                f"OTEL_TRACES_EXPORTER names {name!r}; actorflow serve --otel knows "
                f"otlp, console and none (or run it under opentelemetry-instrument)"
            )
    trace.set_tracer_provider(provider)  # spans the app's own code makes go there too
    return provider, provider.shutdown


def _otlp_exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    )
    found = EXPORTERS.get(f"otlp/{protocol}")
    if found is None:
        raise TracingSetupError(
            f"the OTLP protocol {protocol!r} is not one of http/protobuf and grpc"
        )
    module, package = found
    try:
        exporter = importlib.import_module(module).OTLPSpanExporter
    except ImportError:
        raise TracingSetupError(
            f"OTEL_TRACES_EXPORTER=otlp (the default) over {protocol} needs {package}: "
            f"pip install {package} (or set OTEL_TRACES_EXPORTER=console or none)"
        ) from None
    return exporter()  # it reads OTEL_EXPORTER_OTLP_* itself
