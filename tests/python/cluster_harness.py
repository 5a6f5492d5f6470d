"""Test harness for multi-process clusters: starts `tessera serve` (the coordinator and its worker
processes on loopback), waits until it is ready, and talks to it with a gRPC client built at run
time from the server's reflection service (grpcio + grpcio-reflection from PyPI): no copy of the
.proto files and no code generation, so this also checks that reflection works.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory

MODEL = os.environ.get("TESSERA_TEST_MODEL", "")
BIN = os.environ.get("TESSERA_BIN_DIR", "")
TESSERA = os.path.join(BIN, "cli", "tessera")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`tessera serve` as a child process; use as a context manager."""

    def __init__(self, tp=1, pp=1, replicas=1, threads=1, extra=(), ready_timeout=120):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.args = [TESSERA, "serve", "-m", MODEL, "--tp", str(tp), "--pp", str(pp),
                     "--replicas", str(replicas), "--port", str(self.port), "-t", str(threads),
                     *extra]
        self.ready_timeout = ready_timeout
        self.lines = []
        self._ready = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(self.ready_timeout):
            out = self.output()
            self.__exit__(None, None, None)
            raise AssertionError(f"cluster not ready after {self.ready_timeout} s:\n{out}")
        if self.proc.poll() is not None:
            raise AssertionError(f"tessera serve exited early:\n{self.output()}")
        self.channel = grpc.insecure_channel(self.addr)
        self._client = None
        return self

    @property
    def client(self):
        """A reflection client of the cluster, made on first use."""
        if self._client is None:
            self._client = Client(self.channel)
        return self._client

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)
            if line.startswith("ready"):
                self._ready.set()
        self._ready.set()  # exited: unblock the waiter, which then sees poll()

    def output(self):
        with self._lock:
            return "".join(self.lines)

    def wait_for_line(self, pattern, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.output()}")

    def worker_pids(self):
        """Pids of the worker processes serve started (its direct children)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def __exit__(self, *exc):
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return False


class Client:
    """tessera.v1.Tessera over a channel, with message classes from server reflection."""

    def __init__(self, channel):
        # Imported here, so a test that only starts clusters runs where grpcio-reflection is
        # not installed (a bare GPU machine).
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase)
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        self.service = self.pool.FindServiceByName("tessera.v1.Tessera")

    def message(self, name, **fields):
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(name))
        msg = cls()
        json_format.ParseDict(fields, msg)
        return msg

    def _method(self, name, streaming):
        m = self.service.methods_by_name[name]
        out_cls = message_factory.GetMessageClass(m.output_type)
        factory = self.channel.unary_stream if streaming else self.channel.unary_unary
        return factory(f"/tessera.v1.Tessera/{name}",
                       request_serializer=lambda msg: msg.SerializeToString(),
                       response_deserializer=out_cls.FromString)

    def generate_stream(self, timeout=None, **fields):
        """The response iterator (cancel() it to go away mid-stream)."""
        req = self.message("tessera.v1.GenerateRequest", **fields)
        return self._method("Generate", True)(req, timeout=timeout)

    def generate(self, timeout=120, **fields):
        """Runs a whole Generate: (text, token ids, last message as a dict)."""
        text, ids, last = "", [], None
        for resp in self.generate_stream(timeout=timeout, **fields):
            text += resp.text
            ids += [t.id for t in resp.tokens]
            last = resp
        return text, ids, json_format.MessageToDict(last, preserving_proto_field_name=True)

    def tokenize(self, **fields):
        req = self.message("tessera.v1.TokenizeRequest", **fields)
        return list(self._method("Tokenize", False)(req, timeout=30).ids)

    def model_info(self):
        req = self.message("tessera.v1.GetModelInfoRequest")
        resp = self._method("GetModelInfo", False)(req, timeout=30)
        return json_format.MessageToDict(resp, preserving_proto_field_name=True)


def greedy(prompt, max_tokens):
    return {"prompt": prompt, "max_tokens": max_tokens, "sampling": {"temperature": 0}}
