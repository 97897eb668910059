"""The raster reference policy: blob names, allow-listed HTTPS URLs, public addresses only, no redirects."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from scripts.make_mosaic import Mosaic, draw_window, write_mosaic
from serve_app.errors import status_for
from serve_app.raster_source import (
    RasterPolicy,
    RasterReferenceError,
    blob_gdal_options,
    check_blob_name,
    check_public_address,
    check_reference,
    host_allowed,
    refuse_redirects,
)
from tests.serve_app.azurite import Azurite
from treecore.errors import InvalidImageError
from treecore.raster import read_header, read_window
from treecore.types import Window

POLICY = RasterPolicy(container="images", allowed_hosts=("acct.blob.core.windows.net", "*.data.example.org"))
SAS = "https://acct.blob.core.windows.net/images/site.tif?sv=2024-01-01&sig=abc%2Bdef"


def resolver(*addresses: str):
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> Sequence[str]:
        calls.append((host, port))
        return addresses

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def test_a_blob_name_becomes_a_vsiaz_path() -> None:
    ref = check_reference("mosaics/2026/site-a.tif", POLICY, resolve=resolver())
    assert (ref.kind, ref.name, ref.gdal_path) == (
        "blob",
        "mosaics/2026/site-a.tif",
        "/vsiaz/images/mosaics/2026/site-a.tif",
    )


@pytest.mark.parametrize(
    "name",
    ["", "/a.tif", "a.tif/", "a//b.tif", "../a.tif", "a/../b.tif", "a/..", ".hidden.tif", "a/.b", "a b.tif",
     "a%2Fb.tif", "a\\b.tif", "a.tif\n", "é.tif", "a/" * 300 + "b", "x" * 1025, "/vsicurl/http://x"],
)  # fmt: skip
def test_bad_blob_names_are_refused(name: str) -> None:
    with pytest.raises(RasterReferenceError):
        check_reference(name, POLICY, resolve=resolver())


def test_an_allowed_https_url_resolving_to_public_addresses_is_accepted() -> None:
    resolve = resolver("20.60.1.2", "2603:1030::1")
    ref = check_reference(SAS, POLICY, resolve=resolve)
    assert (ref.kind, ref.host, ref.addresses) == ("url", "acct.blob.core.windows.net", ("20.60.1.2", "2603:1030::1"))
    assert ref.gdal_path == "/vsicurl/" + SAS
    assert resolve.calls == [("acct.blob.core.windows.net", 443)]  # type: ignore[attr-defined]
    assert check_reference("https://eu.data.example.org/a/b.tif", POLICY, resolve=resolve).host == "eu.data.example.org"
    assert check_reference("HTTPS://ACCT.blob.core.windows.net./x.tif", POLICY, resolve=resolve).kind == "url"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://acct.blob.core.windows.net/x.tif", "https"),
        ("ftp://acct.blob.core.windows.net/x.tif", "https"),
        ("file:///etc/passwd", "https"),
        ("https://evil.example.com/x.tif", "allow-list"),
        ("https://data.example.org/x.tif", "allow-list"),  # "*.data.example.org" is subdomains only
        ("https://acct.blob.core.windows.net.evil.com/x.tif", "allow-list"),
        ("https://evilacct.blob.core.windows.net/x.tif", "allow-list"),
        ("https://user:pw@acct.blob.core.windows.net/x.tif", "user name"),
        ("https://acct.blob.core.windows.net:8443/x.tif", "port 443"),
        ("https://acct.blob.core.windows.net:99999/x.tif", "parsed"),
        ("https://acct.blob.core.windows.net/x.tif#frag", "fragment"),
        ("https://acct.blob.core.windows.net/", "path"),
        ("https://acct.blob.core.windows.net/a b.tif", "printable"),
        ("https://acct.blob.core.windows.net/a\r\nHost: x", "printable"),
        ("https://127.0.0.1/x.tif", "allow-list"),
        ("https://[::1]/x.tif", "allow-list"),
        ("https://acct.blob.core.windows.net/" + "a" * 2100, "2048"),
    ],
)
def test_urls_off_the_policy_are_refused_before_any_lookup(url: str, message: str) -> None:
    resolve = resolver("20.60.1.2")
    with pytest.raises(RasterReferenceError, match=message):
        check_reference(url, POLICY, resolve=resolve)
    assert resolve.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "169.254.1.1", "100.64.0.1", "192.0.2.1", "198.18.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1", "2001:0:4136:e378::1",
        "not-an-ip",
    ],
)  # fmt: skip
def test_every_internal_address_is_refused(address: str) -> None:
    with pytest.raises(RasterReferenceError, match="acct.blob.core.windows.net"):
        check_reference(SAS, POLICY, resolve=resolver(address))


def test_one_internal_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(RasterReferenceError, match="10.0.0.5"):
        check_reference(SAS, POLICY, resolve=resolver("20.60.1.2", "10.0.0.5"))
    with pytest.raises(RasterReferenceError, match="no address"):
        check_reference(SAS, POLICY, resolve=resolver())


def test_public_addresses_pass() -> None:
    # (NAT64 addresses, 64:ff9b::/96, Python's ipaddress counts as not global: refused even for a public IPv4.)
    for address in ("20.60.1.2", "8.8.8.8", "2603:1030::1", "2002:808:808::1"):
        assert str(check_public_address(address)) == address


def test_no_url_is_accepted_without_an_allow_list() -> None:
    with pytest.raises(RasterReferenceError, match="allow-list"):
        check_reference(SAS, RasterPolicy(container="images"), resolve=resolver("20.60.1.2"))
    assert not host_allowed("a.b", ["", "*.", " "])


def test_refusals_are_client_errors() -> None:
    with pytest.raises(RasterReferenceError) as caught:
        check_blob_name("../x")
    assert 400 <= status_for(caught.value) < 500


def test_blob_credentials_for_gdal() -> None:
    assert blob_gdal_options(connection_string="UseDevelopmentStorage=true") == {
        "AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"
    }
    assert blob_gdal_options(account_url="https://acct.blob.core.windows.net/") == {"AZURE_STORAGE_ACCOUNT": "acct"}
    assert blob_gdal_options() == {}


# ---- redirects: GDAL follows them, so the probe refuses them first ----


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.hits = 0


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[_Counting]:
    server = _Counting(handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Target(http.server.BaseHTTPRequestHandler):
    """Stands for an internal service (the metadata address, say): counts every request it gets."""

    server: _Counting

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        self.server.hits += 1
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def target() -> Iterator[_Counting]:
    yield from _serve(_Target)


@pytest.fixture
def redirector(target: _Counting) -> Iterator[_Counting]:
    location = f"http://127.0.0.1:{target.server_address[1]}/latest/meta-data/"

    class Redirect(_Target):
        def do_GET(self) -> None:  # noqa: N802
            self.server.hits += 1
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    yield from _serve(Redirect)


def test_gdal_itself_follows_a_redirect(redirector: _Counting, target: _Counting) -> None:
    # Why refuse_redirects exists: with no option to stop it, GDAL goes where the Location header says.
    with pytest.raises(Exception):  # noqa: B017 - the target answers 404, whatever GDAL then says
        read_header(f"/vsicurl/http://127.0.0.1:{redirector.server_address[1]}/follow-me.tif")
    assert target.hits >= 1


def test_a_redirect_is_refused_without_contacting_its_target(redirector: _Counting, target: _Counting) -> None:
    with pytest.raises(RasterReferenceError, match="redirect .*HTTP 302 to http://127.0.0.1") as caught:
        refuse_redirects(f"http://127.0.0.1:{redirector.server_address[1]}/x.tif")
    assert 400 <= status_for(caught.value) < 500
    assert redirector.hits == 1 and target.hits == 0


def test_a_direct_answer_or_no_answer_passes_the_probe(target: _Counting) -> None:
    refuse_redirects(f"http://127.0.0.1:{target.server_address[1]}/x.tif")  # 404: GDAL reports it later
    assert target.hits == 1
    refuse_redirects("http://127.0.0.1:9/x.tif", timeout_s=2)  # nothing listens on the discard port


# ---- a blob name read by GDAL's /vsiaz/ from a real Azurite, with the service's connection string ----


@pytest.mark.azurite
def test_a_blob_in_azurite_is_read_by_windows(azurite: Azurite, tmp_path: Path) -> None:
    cog = tmp_path / "site.tif"
    mosaic = Mosaic(1200, 900, 0.5, seed=5)
    write_mosaic(mosaic, cog, compress="deflate")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client("images")
    if not container.exists():
        container.create_container()
    container.upload_blob("mosaics/2026/site.tif", cog.read_bytes(), overwrite=True)
    ref = check_reference("mosaics/2026/site.tif", RasterPolicy(container="images"), resolve=resolver())
    options = blob_gdal_options(connection_string=azurite.connection_string)
    header = read_header(ref.gdal_path, options=options)
    assert (header.width, header.height, header.epsg, header.tiled) == (1200, 900, 32633, True)
    window = Window(500, 300, 900, 620)
    expected = draw_window(mosaic, window.x0, window.y0, window.width, window.height)
    assert np.array_equal(read_window(ref.gdal_path, window, options=options), expected)
    with pytest.raises(InvalidImageError, match="could not be opened"):
        read_header("/vsiaz/images/mosaics/missing.tif", options=options)
