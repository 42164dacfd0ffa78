#!/usr/bin/env python3
"""A minimal SMTP sink for load tests: one asyncio process that answers any
number of concurrent connections (smtp-sink serves a few hundred), accepts
every message and keeps none. Stands in for the upstream server only where
the test is about the proxy's own behaviour under many connections; the
protocol tests use real Postfix.

    loadsink.py PORT      (prints "ready" when listening; stops on SIGTERM)"""

import asyncio
import resource
import signal
import sys


async def session(reader, writer):
    writer.write(b"220 loadsink ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-loadsink\r\n250-PIPELINING\r\n250-SIZE 200000000\r\n"
                             b"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                while True:
                    body = await reader.readline()
                    if not body or body in (b".\r\n", b".\n"):
                        break
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass


async def main(port):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await asyncio.start_server(session, "127.0.0.1", port, backlog=4096,
                                        limit=1 << 20)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
