"""A small OTLP trace receiver, so integration tests can check the spans auth-jit exports.

Usage: otlp_receiver.py --out FILE [--max-seconds S]

It listens on 127.0.0.1, on ports the OS chooses, for both OTLP transports:
  - OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export
  - OTLP/HTTP: POST /v1/traces, body an ExportTraceServiceRequest as
    application/x-protobuf or application/json (optionally gzip-encoded)

Once both listen it prints one JSON line to stdout and flushes:
  {"grpc_port": N, "http_port": M}
Then every span received is appended to FILE as one JSON line (flushed):
  {"transport": "grpc" | "http", "resource": {key: value}, "scope": "...",
   "name": "...", "trace_id": "<32 hex>", "span_id": "<16 hex>",
   "parent_span_id": "<16 hex>" or "", "kind": int, "status_code": int,
   "attributes": {key: value}}
Attribute values become plain JSON: string, int, bool, float, list (array),
dict (kvlist), hex string (bytes) or null (unset).

It stops cleanly on SIGTERM or SIGINT, or after --max-seconds (default 300),
so a receiver left behind by a failed test does not live on for long.
"""
import argparse
import base64
import gzip
import json
import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse


def plain(value):
    """An OTLP AnyValue as a plain JSON value."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return None if which is None else getattr(value, which)


def attributes(key_values):
    return {kv.key: plain(kv.value) for kv in key_values}


class SpanLog:
    """Appends one JSON line per span to the out file; safe across threads."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def record(self, request, transport):
        with self.lock:
            if self.file.closed:  # a request that raced the shutdown
                return
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        line = {
                            "transport": transport,
                            "resource": resource,
                            "scope": scope_spans.scope.name,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "status_code": span.status.code,
                            "attributes": attributes(span.attributes),
                        }
                        self.file.write(json.dumps(line) + "\n")
                        self.file.flush()


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, log):
        self.log = log

    def Export(self, request, context):
        self.log.record(request, "grpc")
        return ExportResponse()


def hex_ids_to_base64(body):
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64."""

    def convert(obj, keys):
        for key in keys:
            value = obj.get(key)
            if isinstance(value, str) and value:
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    pass  # not hex: leave it, protobuf reads it as base64

    for resource_spans in body.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                convert(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", []):
                    convert(link, ("traceId", "spanId"))
    return body


def http_handler(log):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as OTLP exporters' pooled clients expect

        def do_POST(self):
            if self.path.split("?")[0] != "/v1/traces":
                return self.reply(404, "text/plain", b"not found\n")
            if "Content-Length" not in self.headers:
                return self.reply(411, "text/plain", b"Content-Length required\n")
            body = self.rfile.read(int(self.headers["Content-Length"]))
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            try:
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                request = ExportRequest()
                if content_type == "application/x-protobuf":
                    request.ParseFromString(body)
                elif content_type == "application/json":
                    json_format.ParseDict(
                        hex_ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True
                    )
                else:
                    return self.reply(415, "text/plain", b"unsupported content type\n")
            except Exception as error:  # a malformed body: tell the exporter, keep serving
                return self.reply(400, "text/plain", f"bad request: {error}\n".encode())
            log.record(request, "http")
            if content_type == "application/json":
                self.reply(200, "application/json", b"{}")
            else:
                self.reply(200, "application/x-protobuf", ExportResponse().SerializeToString())

        def reply(self, status, content_type, payload):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):
            pass  # no access log: stderr stays for real errors

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="file to append one JSON line per span to")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop after this long")
    args = parser.parse_args()

    log = SpanLog(args.out)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(log), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    if grpc_port == 0:
        sys.exit("could not bind the gRPC port")
    grpc_server.start()

    http_server = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(log))
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()

    print(json.dumps({"grpc_port": grpc_port, "http_port": http_server.server_port}), flush=True)

    stop.wait(args.max_seconds)
    http_server.shutdown()
    grpc_server.stop(grace=1).wait()
    with log.lock:
        log.file.close()


if __name__ == "__main__":
    main()
