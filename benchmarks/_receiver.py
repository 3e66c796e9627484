"""The upload scenario's receiver (scenario 9): a loopback HTTP/1.1 server, a
process of its own, that reads each request's body and throws it away.

It answers ``201`` with a one-line JSON body, ``{"received": N}``: the bytes it
counted. A contender prints that line as its report (curl writes the response
body to stdout; ``clients/bgtransfer_put.py`` prints the task's reply), so the
runner checks that every byte arrived without the receiver keeping any.

Why this receiver and not nginx or ``bgtransfer.testing``: nginx takes a PUT
body only into a file (``client_body_temp``, then the dav module's rename), so
it would write 1 GiB to disk per run and the disk would be measured; the
package's test server runs in the runner's process and parses with aiohttp. A
bare ``asyncio.Protocol`` costs one ``data_received`` call per 256 KiB read
(4,096 per GiB): measured here, it takes the 1 GiB from ``curl -T`` at several
GiB/s, well above either client (docs/benchmarks.md, scenario 9).

    python _receiver.py        # prints its port on the first line, serves until killed
"""

from __future__ import annotations

import asyncio
import json


class Receiver(asyncio.Protocol):
    """One connection: one request, its body counted, one answer, then close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.head = b""
        self.size: int | None = None  # the Content-Length, once the head is read
        self.got = 0
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        if self.size is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                if len(self.head) > 65536:
                    self.transport.close()
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            fields = {key.strip().lower(): value.strip() for key, value in fields.items()}
            if fields.get("expect", "").lower() == "100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.size = int(fields.get("content-length", "0"))
        self.got += len(data)
        if self.got >= self.size:
            self.answered = True
            body = json.dumps({"received": self.got}).encode() + b"\n"
            self.transport.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()


async def main() -> None:
    server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
