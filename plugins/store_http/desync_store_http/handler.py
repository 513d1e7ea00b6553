"""The request handler both servers build on: :class:`RequestHandler`.

It reads requests (the stdlib's parser with its slow parts replaced by
:mod:`desync_store_http.protocol`), checks ``Authorization`` in constant time, routes
every method to ``on_get``/``on_head``/``on_put`` of the subclass, answers
``GET /metrics`` and writes the request log. Replies come from
:class:`~desync_store_http.replies.ReplyWriter`, bodies and uploads from
:class:`~desync_store_http.uploads.BodyReader`, its base classes.
"""

from __future__ import annotations

import hmac
import io
import traceback
from typing import Any

from desync_store_http import __version__
from desync_store_http.listeners import HEADER_TIMEOUT, IDLE_TIMEOUT
from desync_store_http.protocol import HeaderError, read_headers
from desync_store_http.settings import client_text
from desync_store_http.uploads import BodyError, BodyReader


class RequestHandler(BodyReader):
    """Common request handling: authorization, replies, bodies, logging.

    Every method (GET, PUT, anything) reaches :meth:`dispatch` after the authorization
    check, so unknown methods get desync's 405 rather than the stdlib's 501. Subclasses
    implement :meth:`parse_target` (the path to a key, or an error reply) and the
    ``on_get``/``on_head``/``on_put`` handlers that take that key. Replies come from
    :class:`~desync_store_http.replies.ReplyWriter`, bodies and uploads from
    :class:`~desync_store_http.uploads.BodyReader`.
    """

    protocol_version = "HTTP/1.1"
    server_version = f"desync/{__version__}"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<METHOD>; route every method to one place.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    @property
    def app(self) -> Any:
        """The application object (chunk or index server state)."""
        return self.server.app

    def parse_target(self) -> Any:
        """The key the request path names; reply 4xx and return None if it is invalid."""
        raise NotImplementedError

    def dispatch(self) -> None:
        """Route an authorized request to ``on_get``/``on_head``/``on_put``."""
        handler = {"GET": "on_get", "HEAD": "on_head", "PUT": "on_put"}.get(self.command)
        key = self.parse_target()
        if key is None:
            return
        if handler is None:
            self.reply(405, b"only GET, PUT and HEAD are supported\n")
            return
        getattr(self, handler)(key)

    def setup(self) -> None:
        super().setup()
        prefix = self.server.prefixes.pop(id(self.connection), None)
        if prefix is not None:  # handed over by the fast lane with what it had read
            from desync_store_http.fastlane import PrefixedReader

            self.rfile = io.BufferedReader(PrefixedReader(prefix, self.connection))

    def handle_one_request(self) -> None:
        # The stdlib's, minus what costs time on every request and serves nothing here:
        # the do_<METHOD> lookups (every method goes to _handle) and flushing an
        # unbuffered writer.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if self.parse_request():
                self._handle()
        except TimeoutError:
            self.close_connection = True

    def parse_request(self) -> bool:
        # The stdlib's parse_request, with the header parser of protocol.py (the
        # stdlib's email parser is a large part of a small GET's cost) and HTTP/0.9
        # refused at once (the stdlib would wait for headers such a client never sends,
        # then answer without a status line). The request line may take the idle
        # timeout (keep-alive); headers get less.
        self.command = None  # type: ignore[assignment]
        self._scrape = False
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) == 2:
            self.request_version = ""
            self.send_error(400, "HTTP/0.9 requests are not supported")
            return False
        if len(words) >= 3:
            version = words[-1]
            number = _http_version(version)
            if number is None:
                self.send_error(400, f"Bad request version ({version[:40]!r})")
                return False
            if number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version[5:45]})")
                return False
            self.close_connection = number < (1, 1)
            self.request_version = version
        if len(words) != 3:
            self.send_error(400, f"Bad request syntax ({requestline[:80]!r})")
            return False
        self.command, self.path = words[0], words[1]
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        self.connection.settimeout(HEADER_TIMEOUT)
        try:
            self.headers = read_headers(self.rfile)  # type: ignore[assignment]
        except HeaderError as exc:
            self.send_error(exc.status, str(exc))
            return False
        finally:
            self.connection.settimeout(self.timeout)
        conntype = (self.headers.get("Connection") or "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return bool(self.handle_expect_100())
        return True

    # -- request flow -------------------------------------------------------------------

    def _handle(self) -> None:
        self._replied = False
        self._body_read = False
        metrics = self.settings.metrics
        # Authorized scrapes are neither counted nor in flight: the metrics show the
        # clients' traffic (refused scrapes are counted, as 401s).
        scrape = (metrics is not None and self.command in ("GET", "HEAD")
                  and self.path.partition("?")[0] == "/metrics")
        try:
            if metrics is None or scrape:
                self._serve(scrape)
            else:
                with metrics.handling():
                    self._serve(scrape)
        except BodyError:
            pass
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            self.settings.report(f"internal error serving {self.command} {self.path}:\n"
                                 + traceback.format_exc())
            if not self._replied:
                self.reply(500, b"internal server error\n")
            else:
                self.close_connection = True

    def _serve(self, scrape: bool) -> None:
        if not self._authorized():
            self.reply(401, b"Unauthorized\n")
            return
        if scrape:
            assert self.settings.metrics is not None
            self._scrape = True
            body, content_type = self.settings.metrics.exposition()
            self.reply(200, body, content_type=content_type)
            return
        self.dispatch()

    def _authorized(self) -> bool:
        expected = self.settings.authorization
        if not expected:
            return True
        # Header values arrive decoded as latin-1; compare the bytes the client sent.
        got = self.headers.get("Authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(got, expected.encode("utf-8", "surrogateescape"))

    # -- logging --------------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        metrics = self.settings.metrics
        if metrics is not None and not self._scrape:
            metrics.count_request(getattr(self, "command", "") or "-",
                                  int(code) if isinstance(code, int) else 0)
        log = self.settings.log
        if log is not None:
            # Called for replies to requests the stdlib could not parse too: the method
            # and path may be unset or empty then.
            client = client_text(self.client_address)
            path = getattr(self, "path", "") or "-"
            if len(path) > 1024:
                path = path[:1024] + "..."
            log.write(client, getattr(self, "command", "") or "-", path,
                      int(code) if isinstance(code, int) else 0)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib logs every request and protocol error to stderr; the request log
        # (log_request) and settings.report cover what users need.
        pass


def _http_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of ``HTTP/x.y``, else None."""
    if not text.startswith("HTTP/"):
        return None
    major, dot, minor = text[5:].partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


__all__ = ["RequestHandler"]
