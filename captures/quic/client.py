"""aioquic's example HTTP/3 client (examples/http3_client.py) with two knobs the stock
command line lacks:
  --pad-alpn  48 extra ALPN entries after "h3": the ClientHello (about 1.7 KB) then needs
              two Initial packets, as a post-quantum one does;
  --v2        start in QUIC version 2 (RFC 9369) instead of version 1.
Run from aioquic's examples/ directory: python client.py [--pad-alpn] [--v2] URL"""
import argparse
import asyncio
import ssl
import sys

sys.path.insert(0, ".")
import http3_client  # noqa: E402
from aioquic.h3.connection import H3_ALPN  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.packet import QuicProtocolVersion  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("--pad-alpn", action="store_true")
p.add_argument("--v2", action="store_true")
a = p.parse_args()
alpn = list(H3_ALPN)
if a.pad_alpn:
    alpn += [f"kavwatch-test-padding-{i:03d}" for i in range(48)]
config = QuicConfiguration(is_client=True, alpn_protocols=alpn, verify_mode=ssl.CERT_NONE)
if a.v2:
    config.original_version = QuicProtocolVersion.VERSION_2
    config.supported_versions = [QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1]
http3_client.args = argparse.Namespace(session_ticket=None)  # read by its ticket handler
asyncio.run(http3_client.main(config, [a.url], None, False, None, 0, False, False))
