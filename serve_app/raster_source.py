"""Which raster references the service may read, as GDAL paths: a blob in the images container, or an HTTPS URL
on the allow-list whose host resolves only to public addresses. An image URL is never a way to make the service
fetch an internal address (loopback, link-local and the cloud metadata address 169.254.169.254, private ranges,
unique-local IPv6, ...).

`check_reference` is pure: it takes the resolver as an argument (tests pass a fake one) and sends nothing.

Redirects. GDAL follows HTTP redirects itself and no configuration option turns that off: CPLHTTPSetOptions
(port/cpl_http.cpp) sets CURLOPT_FOLLOWLOCATION=1 and CURLOPT_MAXREDIRS=10 for every /vsicurl/ request, in GDAL
3.10 (the one in rasterio 1.4.4's wheels) and still in GDAL's main branch; the only related option,
CPL_VSIL_CURL_AUTHORIZATION_HEADER_ALLOWED_IF_REDIRECT (default IF_SAME_HOST), only keeps credentials off other
hosts. So a redirect is refused before GDAL ever sees the URL: `refuse_redirects` sends one ranged GET with
redirects disabled and refuses any 3xx answer. What remains is an allow-listed host that answers the probe
directly and redirects GDAL's later range requests, or a DNS answer that changes between the check and GDAL's
connection: the allow-list holds the operator's own storage endpoints, which do neither; an egress network
policy that denies the private ranges and the metadata address to the detector pods closes it for good.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from treecore.errors import InvalidParametersError
from treecore.files import is_plain_name

#: Longest blob name Azure accepts, characters; and most path segments (folders) in one.
MAX_BLOB_NAME = 1024
MAX_BLOB_SEGMENTS = 254
#: Longest URL accepted, characters (a SAS URL is about 300-600).
MAX_URL_LENGTH = 2048
#: Seconds the redirect probe waits for the server.
PROBE_TIMEOUT_S = 10.0

#: host, port -> the addresses it resolves to (strings, IPv4 or IPv6).
Resolver = Callable[[str, int], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and RFC 8215).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class RasterReferenceError(InvalidParametersError):
    """A raster reference the service will not read: a bad blob name, a URL off the allow-list, an internal address."""


@dataclass(frozen=True)
class RasterPolicy:
    """What may be read. `container`: the images container (AZURE_STORAGE_CONTAINER_IMAGES). `allowed_hosts`:
    host names an HTTPS URL may name, lower case; "*.example.net" allows every subdomain of example.net (not
    example.net itself). Empty: no URL is accepted, only blob names."""

    container: str
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class RasterReference:
    """An allowed reference. `kind` "blob": `name` in the images container; "url": an HTTPS `url` whose `host`
    resolved to `addresses` (all public). `gdal_path` is what treecore.raster opens."""

    kind: Literal["blob", "url"]
    gdal_path: str
    name: str | None = None
    url: str | None = None
    host: str | None = None
    addresses: tuple[str, ...] = ()


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (getaddrinfo, TCP), as strings.

    Raises:
        RasterReferenceError: the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RasterReferenceError(f"the image URL's host {host!r} does not resolve ({exc})") from None
    return sorted({str(info[4][0]) for info in infos})


def check_reference(reference: str, policy: RasterPolicy, *, resolve: Resolver = system_resolver) -> RasterReference:
    """Check a raster reference: a URL (it has "://") must be HTTPS on the allow-list, anything else a blob name.

    Args:
        reference: a blob name ("mosaics/2026/site-a.tif") or a URL ("https://acct.blob.core.windows.net/...").
        policy: the images container and the URL host allow-list.
        resolve: host, port -> addresses (tests pass a fake; default: the system resolver).

    Returns:
        The RasterReference, with the GDAL path to open (/vsiaz/<container>/<name> or /vsicurl/<url>).

    Raises:
        RasterReferenceError: anything not allowed; the message says why.
    """
    if not isinstance(reference, str) or not reference:
        raise RasterReferenceError("the image reference is empty: give a blob name or an HTTPS URL")
    if "://" in reference:
        return check_url(reference, policy.allowed_hosts, resolve=resolve)
    name = check_blob_name(reference)
    return RasterReference("blob", f"/vsiaz/{policy.container}/{name}", name=name)


def check_blob_name(name: str) -> str:
    """A blob name in the images container: folders allowed, each part a plain name (treecore.files.is_plain_name).

    Raises:
        RasterReferenceError: empty parts ("a//b", a leading or trailing "/"), "..", hidden or odd characters,
            percent-escapes, more than MAX_BLOB_NAME characters or MAX_BLOB_SEGMENTS parts.
    """
    if len(name) > MAX_BLOB_NAME:
        raise RasterReferenceError(f"the blob name is longer than {MAX_BLOB_NAME} characters")
    parts = name.split("/")
    if len(parts) > MAX_BLOB_SEGMENTS or not all(is_plain_name(part) for part in parts):
        raise RasterReferenceError(
            f"{name[:100]!r} is not a blob name: parts separated by '/', each of letters, digits, '.', '_', '-' "
            "starting with a letter or digit, no '..', no empty part"
        )
    return name


def check_url(url: str, allowed_hosts: Iterable[str], *, resolve: Resolver = system_resolver) -> RasterReference:
    """An HTTPS URL on the allow-list whose host resolves to public addresses only.

    Raises:
        RasterReferenceError: not HTTPS, a user name or password in it, a port other than 443, a fragment,
            spaces or control characters, a host off the allow-list, or any resolved address not public.
    """
    if len(url) > MAX_URL_LENGTH or not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise RasterReferenceError(
            f"the image URL must be at most {MAX_URL_LENGTH} printable ASCII characters without spaces"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RasterReferenceError(f"the image URL cannot be parsed ({exc})") from None
    if parts.scheme.lower() != "https":
        raise RasterReferenceError(f"the image URL must be https://, not {parts.scheme}://")
    if parts.username is not None or parts.password is not None:
        raise RasterReferenceError("the image URL must not hold a user name or password (use a SAS token)")
    if port not in (None, 443):
        raise RasterReferenceError(f"the image URL must use port 443, not {port}")
    if parts.fragment or url.endswith("#"):
        raise RasterReferenceError("the image URL must not have a #fragment")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host or not parts.path.strip("/"):
        raise RasterReferenceError("the image URL needs a host and a path to the file")
    if not host_allowed(host, allowed_hosts):
        raise RasterReferenceError(f"the image URL's host {host!r} is not on the allow-list (RASTER_URL_HOSTS)")
    addresses = tuple(resolve(host, 443))
    if not addresses:
        raise RasterReferenceError(f"the image URL's host {host!r} resolves to no address")
    for address in addresses:
        check_public_address(address, host)
    return RasterReference("url", f"/vsicurl/{url}", url=url, host=host, addresses=addresses)


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether `host` (lower case, no trailing dot) is on the allow-list: an exact name, or "*.suffix"."""
    for entry in allowed_hosts:
        entry = entry.strip().rstrip(".").lower()
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif entry and host == entry:
            return True
    return False


def check_public_address(address: str, host: str = "") -> IPAddress:
    """Refuse an address that is not on the public internet.

    Loopback, link-local (169.254.0.0/16 with the metadata address, fe80::/10), private (10/8, 172.16/12,
    192.168/16), shared (100.64/10), unique-local (fc00::/7), multicast, reserved, unspecified and documentation
    ranges are refused; an IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo) is judged by
    that IPv4 address too.

    Raises:
        RasterReferenceError: not a public address (the message names the host and the address).
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone index ("fe80::1%eth0") is link-local
    except ValueError:
        raise RasterReferenceError(f"the image URL's host {host!r} resolved to {address!r}, not an address") from None
    for candidate in (ip, *_embedded_ipv4(ip)):
        if "%" in address or not candidate.is_global or candidate.is_multicast or candidate.is_reserved:
            raise RasterReferenceError(
                f"the image URL's host {host!r} resolves to {address}, an internal or non-public address: refused"
            )
    return ip


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in network for network in _NAT64):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def refuse_redirects(url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Send one GET for the first byte of `url`, following no redirect, and refuse a 3xx answer.

    GDAL would follow it (see the module docstring); call this after `check_url` and before handing the URL to
    GDAL. Other HTTP errors are left to GDAL's own read, which reports them.

    Args:
        url: an HTTPS URL that passed `check_url` (tests use a local http:// server).
        timeout_s: seconds to wait for the answer.

    Raises:
        RasterReferenceError: the server answers with a redirect (the message gives the status and target).
    """
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"}, method="GET")
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read(1)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            target = exc.headers.get("Location", "?")
            raise RasterReferenceError(
                f"the image URL answers with a redirect (HTTP {exc.code} to {target[:200]}): redirects are not "
                "followed; give the final URL"
            ) from None
    except (urllib.error.URLError, OSError):
        return  # unreachable now: GDAL's read reports it


def blob_gdal_options(*, connection_string: str = "", account_url: str = "") -> dict[str, str]:
    """GDAL configuration options for /vsiaz/ with the service's own credential.

    Args:
        connection_string: AZURE_STORAGE_CONNECTION_STRING (Azurite, or an account key); GDAL reads its
            BlobEndpoint, AccountName and AccountKey.
        account_url: AZURE_STORAGE_ACCOUNT_URL (https://<account>.blob.core.windows.net): GDAL then signs with
            the workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID, which the AKS
            workload identity webhook puts in the pod's environment) or the VM's managed identity.

    Returns:
        The options for treecore.raster's `options` argument ({} when neither is set).
    """
    if connection_string:
        return {"AZURE_STORAGE_CONNECTION_STRING": connection_string}
    if account_url:
        host = (urlsplit(account_url).hostname or "").lower()
        return {"AZURE_STORAGE_ACCOUNT": host.split(".", 1)[0]} if host else {}
    return {}
