"""Process logging: text lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import warnings

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger as aiohttp_server
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from schemas.settings import Settings


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with a state transition's fields as keys of their own."""

    FIELDS = ("node", "from", "to", "reason", "run_id")

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{key: getattr(record, key) for key in self.FIELDS if hasattr(record, key)},
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


# C0 and C1 controls, DEL and Unicode's line and paragraph separators as escapes (each is
# a line break, or a terminal's escape, to some reader); a tab stays.
_ESCAPES = {
    c: f"\\x{c:02x}" if c < 256 else f"\\u{c:04x}"
    for c in (*range(32), *range(127, 160), 0x2028, 0x2029)
    if c != 9
} | {10: "\\n", 13: "\\r"}


class TextLogFormatter(logging.Formatter):
    """A record a line (its traceback after it): what a caller or a frpc sent, such as a
    path or an frps user, may hold a line break, which would forge a line of its own, or
    a terminal's escape."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  (logging's name)
        return super().formatMessage(record).translate(_ESCAPES)


class RequestsNotHttp(logging.Filter):
    """aiohttp logs a request it cannot read (a 400 it answers itself: a line too long, a
    header that is not one) at ERROR with a traceback, as it logs its own failures: anyone
    may send one, and fill the log. Such a record is DEBUG's, as aiohttp has it for bytes
    that are not HTTP at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter() if settings.log_format == "json" else TextLogFormatter()
    )
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    # aiohttp warns of a form part's bad Content-Disposition in the sender's words: the
    # sender's to hear, not the log's, and each text would stay a warning registry entry.
    for bad in (BadContentDispositionHeader, BadContentDispositionParam):
        warnings.filterwarnings("ignore", category=bad)
    logging.captureWarnings(True)  # any other: a record, in the log's own format
    aiohttp_server.addFilter(RequestsNotHttp())
    # kubernetes_asyncio logs every answer's body at DEBUG: a TokenReview's holds the bearer
    # token it reviewed, which must never reach a log.
    logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)
    if settings.log_level != "DEBUG":
        # asyncssh logs every connection and channel at INFO: one exec is a dozen lines.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
