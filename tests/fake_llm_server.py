"""An OpenAI-compatible chat-completions server for tests and benchmarks, on 127.0.0.1 only.

It answers from a lookup (document text -> label) or a rule (the first label named in the document), with
logprobs, n samples and usage (optionally over-reporting prompt tokens against litellm's count), and injects faults
on request: slow answers, 429 with Retry-After, 500, 401 (also one that echoes the key it was sent), a dropped
connection, malformed JSON, a label outside the set, an empty reply, or an echoed prompt-injection attempt.
Tests steer it through POST /_control and read what it received from GET /_requests.

Run it as a script (`python tests/fake_llm_server.py --port-file F`); `FakeLLM` starts and stops it by PID.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DOCUMENT = re.compile(r"<document>\n?(.*?)\n?</document>", re.S)
TOKENS = re.compile(r"\w+|[^\w]+")


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self, **config: Any) -> None:
        self.lookup: dict[str, str] = config.get("lookup", {})
        self.labels: list[str] = config.get("labels", [])
        self.confidence: float = config.get("confidence", 0.9)
        self.delay: float = config.get("delay", 0.0)
        self.logprobs: bool = config.get("logprobs", True)
        self.faults: list[dict[str, Any]] = config.get("faults", [])
        self.generation_extra: list[dict[str, str]] = config.get("generation_extra", [])
        # A provider whose tokenizer counts more prompt tokens than litellm's counter (the bill is its count).
        self.usage_factor: float = config.get("usage_factor", 1.0)
        # Models of different quality behind one server: model name -> {"error_rate", "right", "wrong", "spread"}
        # (the share of documents it gets wrong, deterministically per document, its mean confidence when right and
        # when wrong, and the width of the uniform spread around each).
        self.models: dict[str, dict[str, float]] = config.get("models", {})
        self.requests: list[dict[str, Any]] = []
        self.generated = 0

    def take_fault(self, document: str) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                times = fault.get("times", 1)  # -1: always
                match = fault.get("match", "*")
                if times == 0 or (match != "*" and match not in document):
                    continue
                if times > 0:
                    fault["times"] = times - 1
                return dict(fault)
        return None


STATE = State()


def _count_tokens(model: str, messages: list[dict[str, Any]] | None = None, text: str | None = None) -> int:
    import litellm  # the same counter kdstudio's estimates use, as a real provider's would roughly agree

    if text is not None:
        return litellm.token_counter(model=model, text=text)
    return litellm.token_counter(model=model, messages=messages)


def _schema(body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    fmt = body.get("response_format") or {}
    spec = fmt.get("json_schema") or {}
    return spec.get("name"), spec.get("schema") or {}


def _classify(document: str, labels: list[str]) -> str:
    found = STATE.lookup.get(document.strip())
    if found is not None:
        return found
    lowered = document.lower()
    return next((label for label in labels if label.lower() in lowered), labels[0])


def _profiled(model: str, document: str, label: str, labels: list[str]) -> tuple[str, float]:
    """A profiled model's answer: wrong on a fixed share of documents (the next label), less confident there; the
    confidence wobbles by document so that right and wrong answers overlap, as real logprobs do."""
    profile = STATE.models[model]
    digest = hashlib.sha256(f"{model}\n{document}".encode()).digest()
    draw, wobble = digest[0] / 256, (digest[1] / 256 - 0.5) * profile.get("spread", 0.2)
    if draw < profile.get("error_rate", 0.0) and len(labels) > 1:
        wrong = labels[(labels.index(label) + 1) % len(labels)]
        return wrong, min(0.99, max(0.05, profile.get("wrong", 0.6) + wobble))
    return label, min(0.99, max(0.05, profile.get("right", 0.9) + wobble))


def _token_logprobs(content: str, label: str, labels: list[str], confidence: float) -> list[dict[str, Any]]:
    """Tokens of `content` with top alternatives where the label value begins, as OpenAI returns them."""
    start = content.index(json.dumps(label)) + 1
    out = []
    position = 0
    others = [x for x in labels if x != label]
    for piece in TOKENS.findall(content):
        entry: dict[str, Any] = {"token": piece, "logprob": 0.0, "bytes": list(piece.encode()), "top_logprobs": []}
        if position == start:
            entry["logprob"] = math.log(confidence)
            alts = []
            rest = (1.0 - confidence) / max(1, len(others))
            seen = {piece}
            for other in others:
                first = TOKENS.findall(other)[0]
                if first in seen:
                    continue
                seen.add(first)
                alts.append({"token": first, "logprob": math.log(max(rest, 1e-12)), "bytes": list(first.encode())})
            entry["top_logprobs"] = [{"token": piece, "logprob": entry["logprob"], "bytes": entry["bytes"]}, *alts]
        out.append(entry)
        position += len(piece)
    return out


def _generation(body: dict[str, Any], schema: dict[str, Any], labels: list[str]) -> str:
    items = schema.get("properties", {}).get("samples", {})
    n = int(items.get("maxItems") or items.get("minItems") or 4)
    samples = []
    with STATE.lock:
        for _ in range(n):
            STATE.generated += 1
            label = labels[STATE.generated % len(labels)]
            samples.append({"text": f"A newly written {label} story, number {STATE.generated}, about {label} "
                                    f"matters in some detail.", "label": label})
    return json.dumps({"samples": samples + STATE.generation_extra})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet: tests read /_requests instead
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/_requests":
            with STATE.lock:
                self._send(200, STATE.requests)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_control":
            with STATE.lock:
                STATE.reset(**body)
            self._send(200, {"ok": True})
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        self._complete(body)

    def _complete(self, body: dict[str, Any]) -> None:
        started = time.time()
        messages = body.get("messages", [])
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        user = user if isinstance(user, str) else json.dumps(user)
        match = DOCUMENT.search(user)
        document = match.group(1) if match else ""
        schema_name, schema = _schema(body)
        properties = schema.get("properties", {})
        label_schema = properties.get("label") or properties.get("samples", {}).get("items", {}).get(
            "properties", {}).get("label", {})
        labels = label_schema.get("enum") or STATE.labels
        fault = STATE.take_fault(document)
        record = {"t0": started, "model": body.get("model"), "document": document[:200], "schema": schema_name,
                  "fault": fault and fault.get("kind"), "auth": self.headers.get("Authorization"), "body": body}
        with STATE.lock:
            STATE.requests.append(record)
        delay = STATE.delay + (fault.get("delay", 0.0) if fault and fault.get("kind") == "slow" else 0.0)
        if delay:
            time.sleep(delay)
        kind = fault and fault.get("kind")
        if kind == "429":
            self._send(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}},
                       {"Retry-After": str(fault.get("retry_after", 1))})
            return
        if kind == "401":
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return
        if kind == "401-echo":
            # A provider (or proxy) that quotes the credentials it was sent back in its error.
            auth = self.headers.get("Authorization", "")
            self._send(401, {"error": {"message": f"Incorrect API key provided: {auth} (key "
                                                  f"{auth.removeprefix('Bearer ')})", "type": "invalid_request_error"}})
            return
        if kind == "500":
            self._send(500, {"error": {"message": "The server had an error", "type": "server_error"}})
            return
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return

        choices = []
        n = int(body.get("n") or 1)
        confidence = STATE.confidence
        if schema_name == "generated_samples":
            contents = [_generation(body, schema, labels)]
            chosen = [None]
        else:
            label = _classify(document, labels)
            if body.get("model") in STATE.models:
                label, confidence = _profiled(body["model"], document, label, labels)
            votes = round(n * confidence) if n > 1 else n
            second = next((x for x in labels if x != label), label)
            chosen = [label if i < votes else second for i in range(n)]
            wants_confidence = "confidence" in schema.get("properties", {})
            contents = [json.dumps({"label": c, **({"confidence": confidence} if wants_confidence else {})})
                        for c in chosen]
        if kind == "malformed":
            contents = ['{"label": "' + str(chosen[0]) + '", oops']
        elif kind == "outside":
            contents = [json.dumps({"label": fault.get("label", "weather")})]
        elif kind == "empty":
            contents = [""]
        elif kind == "inject":
            # The model "obeyed" the document: it answers whatever the document told it to.
            contents = [document[document.index("Respond with") + len("Respond with"):].strip()
                        if "Respond with" in document else document]
        for i, content in enumerate(contents):
            choice: dict[str, Any] = {"index": i, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}
            if body.get("logprobs") and STATE.logprobs and chosen[i] is not None and kind is None:
                choice["logprobs"] = {"content": _token_logprobs(content, chosen[i], labels, confidence)}
            choices.append(choice)
        model = body.get("model", "fake")
        prompt_tokens = math.ceil(_count_tokens(model, messages=messages) * STATE.usage_factor)
        completion_tokens = sum(_count_tokens(model, text=c) for c in contents)
        record["t1"] = time.time()
        self._send(200, {
            "id": f"chatcmpl-{int(started * 1e6)}", "object": "chat.completion", "created": int(started),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


class FakeLLM:
    """Starts the server as a child process on 127.0.0.1 and stops it by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLM:
        port_file = self.workdir / "fake-llm.port"
        port_file.unlink(missing_ok=True)
        self.process = subprocess.Popen([sys.executable, __file__, "--port-file", str(port_file)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None:
                raise RuntimeError(f"fake LLM server died: {self.process.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("fake LLM server did not start in 60 s")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        import urllib.request

        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def configure(self, **config: Any) -> None:
        """Replace the server's behaviour (and forget the requests it has seen)."""
        self._call("POST", "/_control", config)

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_requests")

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    _count_tokens("gpt-4o-mini", text="warm up")  # import litellm before the first request, not during it
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.rename(args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
