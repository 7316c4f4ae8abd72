"""Exception types for ztfsds.

Every error raised on bad input is a subclass of `ZTFSDSError` and names the file (or product), and the
problem, so that an operator reading a night log knows what to fix without a traceback. Stage failures
that a night must survive (no stars, failed astrometry) are errors too: the product runners catch them
and turn them into INFOBITS/status instead of crashing the night.
"""

from __future__ import annotations

import os

__all__ = [
    "ZTFSDSError",
    "InputError",
    "FITSFormatError",
    "TruncatedFileError",
    "MissingExtensionError",
    "MissingKeywordError",
    "ShapeError",
    "NonFiniteError",
    "ProductNotFoundError",
    "ProductNameError",
    "CatalogUnavailableError",
    "ConfigError",
    "StageError",
    "NoStarsError",
    "AstrometryError",
    "PhotometryError",
    "NotImplementedYetError",
    "ArchiveError",
]


class ZTFSDSError(Exception):
    """Base class of every error ztfsds raises on purpose."""


class InputError(ZTFSDSError):
    """An input file is unusable.

    Parameters
    ----------
    path : str or path-like or None
        The file at fault (None when the input did not come from a file).
    problem : str
        What is wrong, in words an operator understands.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = self.path if self.path is not None else "<in-memory input>"
        super().__init__(f"{where}: {problem}")


class FITSFormatError(InputError):
    """The file is not a readable FITS file."""


class TruncatedFileError(FITSFormatError):
    """The FITS file ends before its headers say it should (an interrupted transfer or write)."""


class MissingExtensionError(InputError):
    """An expected HDU (for example one amplifier of a raw CCD file) is absent."""


class MissingKeywordError(InputError):
    """A header keyword the pipeline needs is absent."""

    def __init__(self, path, keyword: str, hdu: int | str = 0):
        self.keyword = keyword
        self.hdu = hdu
        super().__init__(path, f"missing header keyword {keyword!r} in HDU {hdu!r}")


class ShapeError(InputError):
    """An image has the wrong shape."""

    def __init__(self, path, got: tuple, expected: tuple, hdu: int | str = 0):
        self.got = tuple(got)
        self.expected = tuple(expected)
        super().__init__(path, f"HDU {hdu!r} has shape {self.got}, expected {self.expected}")


class NonFiniteError(InputError):
    """An image holds NaN/inf pixels where none are allowed."""


class ProductNotFoundError(ZTFSDSError, FileNotFoundError):
    """A product that a stage needs does not exist under the data root."""


class ProductNameError(ZTFSDSError, ValueError):
    """A file name does not follow the ZTF product naming convention."""


class CatalogUnavailableError(ZTFSDSError, ConnectionError):
    """An online calibrator-catalog service (the Gaia archive, VizieR) could not be reached or failed.

    The message names the service and its address, says what went wrong and suggests the offline
    providers (the simulator's sky, a local file) of `ztfsds.catalogs`.

    Parameters
    ----------
    service : str
        The service, e.g. ``'Gaia archive (https://gea.esac.esa.int/tap-server/tap)'``.
    problem : str
        What failed (usually the underlying exception).
    """

    def __init__(self, service: str, problem: str):
        self.service = service
        self.problem = problem
        super().__init__(f"{service}: {problem}. Build the calibrator catalogs offline instead: from the "
                         "simulator's sky (provider='sim') or from a local table (LocalFileProvider)")

    def __reduce__(self):  # OSError pickles its args; rebuild from ours (process pools send errors back)
        return type(self), (self.service, self.problem)


class ConfigError(ZTFSDSError, ValueError):
    """A parameter file or parameter value is invalid (unknown key, wrong type, bad value)."""


class StageError(ZTFSDSError):
    """A processing stage could not produce a valid result for one item (a quadrant, an exposure).

    Product runners catch it, record ``infobits`` in the product status and let the night go on.

    Parameters
    ----------
    message : str
        What failed.
    infobits : int, optional
        The INFOBITS value the failure corresponds to (see `ztfsds.products.InfoBits`).
    product : str, optional
        The product (file name or key) the failure concerns.
    """

    def __init__(self, message: str, *, infobits: int = 0, product: str | None = None):
        self.infobits = int(infobits)
        self.product = product
        super().__init__(f"{product}: {message}" if product else message)


class NoStarsError(StageError):
    """Too few sources were found to go on (clouds, a shutter failure, a blank frame)."""


class AstrometryError(StageError):
    """No trustworthy astrometric solution: the WCS is not written rather than written wrong."""


class PhotometryError(StageError):
    """Photometric calibration or PSF creation was not possible."""


class NotImplementedYetError(ZTFSDSError, NotImplementedError):
    """The stage exists in the design but is not built yet in this version."""


class ArchiveError(ZTFSDSError):
    """The archive database failed or was asked something it cannot answer.

    The message names the database (its URL, without a password) and the problem: an unreachable
    server, a failed statement, an alert that is not stored.
    """


class AlertPacketError(InputError):
    """An alert packet does not follow its Avro schema, or an alert file cannot be decoded."""


class AlertDistributionError(ZTFSDSError):
    """Alert packets could not be sent to a Kafka broker (no client library, no broker, a failed delivery).

    Nothing is lost: the packets of the quadrant stay in its alert tar file.

    Parameters
    ----------
    servers : str
        The broker address(es) (``bootstrap.servers``).
    topic : str
        The topic.
    problem : str
        What failed.
    """

    def __init__(self, servers: str, topic: str, problem: str):
        self.servers = servers
        self.topic = topic
        self.problem = problem
        super().__init__(f"Kafka {servers} topic {topic!r}: {problem} (the packets remain in the alert tar file)")

    def __reduce__(self):  # rebuild from our arguments (process pools send errors back)
        return type(self), (self.servers, self.topic, self.problem)
