#!/usr/bin/env python3
"""Serving a char-RNN over HTTP with cellfuse.Generator, streaming characters as they are made.

    python3 examples/serve_charrnn.py                   # server and client in one process
    python3 examples/serve_charrnn.py --model m.cfgen   # a generator saved with gen.save(...)
    python3 examples/serve_charrnn.py --serve --port 8000
    curl -N 'http://127.0.0.1:8000/generate?prime=The%20&length=300&temperature=0.8'

The server (standard library only) answers GET /generate?prime=...&length=...&temperature=...
[&top_k=...&top_p=...&seed=...] with the characters as a chunked text/plain stream, each chunk
sent as soon as the native loop has made it (gen.stream). The client prints the text as it
arrives, then the first-token latency and the characters per second it saw.

Without --model it builds an untrained char-RNN (embedding 128 -> 2-layer nn.LSTM 512 -> Linear),
int8: its text is noise, its speed is what a trained model of that size gets.
"""
import argparse
import http.client
import http.server
import socketserver
import sys
import threading
import time
import urllib.parse

import torch
from torch import nn

import cellfuse

VOCAB = "".join(chr(c) for c in range(32, 127)) + "\n"


def demo_generator(weights):
    torch.manual_seed(0)

    class CharRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(len(VOCAB), 128)
            self.rnn = nn.LSTM(128, 512, 2)
            self.dec = nn.Linear(512, len(VOCAB))

    return cellfuse.Generator.from_torch(CharRNN().eval(), vocab=VOCAB, weights=weights)


def make_handler(gen):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path != "/generate":
                return self.send_error(404, "try /generate?prime=...&length=...")
            # Requests are served one generation at a time (the generator holds the cores).
            q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            try:
                prime = q.get("prime", "The ")
                length = int(q.get("length", 200))
                opts = dict(temperature=float(q.get("temperature", 0.8)),
                            top_k=int(q["top_k"]) if "top_k" in q else None,
                            top_p=float(q["top_p"]) if "top_p" in q else None,
                            seed=int(q["seed"]) if "seed" in q else None)
                if not 0 <= length <= 100000:
                    raise ValueError(f"length {length} is not in 0..100000")
                pieces = gen.stream(prime, length, **opts)
                first = next(pieces, "")  # errors in the arguments surface here, before the headers
            except (ValueError, cellfuse.CellfuseError) as e:
                return self.send_error(400, str(e).splitlines()[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                if first:
                    self._chunk(first)
                for piece in pieces:
                    self._chunk(piece)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pieces.close()  # the client left: stop generating

        def _chunk(self, text):
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def log_message(self, fmt, *args):
            pass

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def client(host, port, prime, length, temperature, seed):
    """Streams one generation, printing it as it comes; returns (first-token ms, chars/s)."""
    conn = http.client.HTTPConnection(host, port)
    query = urllib.parse.urlencode(dict(prime=prime, length=length, temperature=temperature, seed=seed))
    start = time.perf_counter()
    conn.request("GET", "/generate?" + query)
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"server: {resp.status} {resp.reason}")
    first, chars = None, 0
    sys.stdout.write(prime)
    while True:
        data = resp.read1(4096)
        if not data:
            break
        if first is None:
            first = time.perf_counter()
        text = data.decode(errors="replace")
        chars += len(text)
        sys.stdout.write(text)
        sys.stdout.flush()
    end = time.perf_counter()
    print()
    first_ms = (first - start) * 1e3 if first else float("nan")
    rate = chars / (end - first) if first and end > first else float("nan")
    return first_ms, rate, chars


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a generator file (cellfuse.Generator.save)")
    ap.add_argument("--weights", default="int8", help="format of the demo model (fp32, bf16, int8, int4)")
    ap.add_argument("--serve", action="store_true", help="only serve (no client)")
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--prime", default="The ")
    ap.add_argument("--length", type=int, default=400)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    gen = cellfuse.Generator.load(args.model) if args.model else demo_generator(args.weights)
    server = Server(("127.0.0.1", args.port), make_handler(gen))
    host, port = server.server_address
    print(f"serving {gen} on http://{host}:{port}/generate", file=sys.stderr)
    if args.serve:
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    first_ms, rate, chars = client(host, port, args.prime, args.length, args.temperature, args.seed)
    print(f"first token after {first_ms:.1f} ms; {chars} characters at {rate:.0f} characters/s", file=sys.stderr)
    server.shutdown()


if __name__ == "__main__":
    main()
