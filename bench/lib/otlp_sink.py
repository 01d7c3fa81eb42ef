"""An OTLP/HTTP sink for the tracing-cost benchmark: answers every POST /v1/traces with
200 and an empty ExportTraceServiceResponse, and counts the exports (printed as
"received N" after each). Loopback only; stops on SIGTERM."""
import http.server
import sys
import threading

count = 0
lock = threading.Lock()


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global count
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        with lock:
            count += 1
            n = count
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
        print("received %d" % n, flush=True)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
server.serve_forever()
