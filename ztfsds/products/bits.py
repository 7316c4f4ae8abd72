"""The ZTF mask-image pixel bits and the science-image INFOBITS quality word.

Both legends are copied verbatim from the headers of a real IPAC science quadrant
(``ztf_20200924431759_000655_zr_c13_o_q3_{sciimg,mskimg}.fits``), so that products written by ztfsds
carry the same ``BITnn`` cards and the same meanings that ZTF users already filter on.
"""

from __future__ import annotations

import enum

from astropy.io import fits

__all__ = ["MaskBits", "InfoBits", "bits_legend_cards"]


class _LegendFlag(enum.IntFlag):
    """An IntFlag whose members carry the header legend text of their bit."""

    def __new__(cls, value: int, legend: str = ""):
        member = int.__new__(cls, value)
        member._value_ = value
        member.legend = legend
        return member

    @classmethod
    def describe(cls, value: int) -> list[str]:
        """Names of the bits set in ``value``, lowest bit first.

        Parameters
        ----------
        value : int
            A mask pixel value or an INFOBITS word.

        Returns
        -------
        list of str
            Member names; an unknown set bit is reported as ``'BITnn'``.
        """
        value = int(value)
        members = cls._single_bits()
        names = []
        bit = 0
        while value >> bit:
            if (value >> bit) & 1:
                member = members.get(1 << bit)
                names.append(member.name if member is not None else f"BIT{bit:02d}")
            bit += 1
        return names

    @classmethod
    def _single_bits(cls) -> dict:
        """Members that are single bits, by value (composites such as ``BAD`` excluded)."""
        return {int(m): m for m in cls.__members__.values() if int(m) and not int(m) & (int(m) - 1)}


class MaskBits(_LegendFlag):
    """Pixel bits of a ZTF ``mskimg`` (bits 0-12; 13-15 reserved).

    ``MaskBits.BAD`` (6141) is every bit except the two informational ones (``SOURCE`` and
    ``PSF_SOURCE``): ``(mskimg & MaskBits.BAD) != 0`` selects the pixels users normally reject.

    Examples
    --------
    >>> from ztfsds.products import MaskBits
    >>> int(MaskBits.SATURATED), int(MaskBits.BAD)
    (256, 6141)
    >>> MaskBits.describe(256 | 2)
    ['SOURCE', 'SATURATED']
    """

    SATELLITE_TRACK = 1 << 0, "AIRCRAFT/SATELLITE TRACK"
    SOURCE = 1 << 1, "CONTAINS SEXTRACTOR DETECTION"
    LOW_RESPONSIVITY = 1 << 2, "LOW RESPONSIVITY"
    HIGH_RESPONSIVITY = 1 << 3, "HIGH RESPONSIVITY"
    NOISY = 1 << 4, "NOISY"
    GHOST = 1 << 5, "GHOST FROM BRIGHT SOURCE"
    SPILLAGE_GHOST = 1 << 6, "POSSIBLE GHOST FROM CHARGE SPILLAGE"
    SPIKE = 1 << 7, "PIXEL SPIKE (POSSIBLE RAD HIT)"
    SATURATED = 1 << 8, "SATURATED"
    DEAD = 1 << 9, "DEAD (UNRESPONSIVE)"
    NAN = 1 << 10, "NAN (not a number)"
    PSF_SOURCE = 1 << 11, "CONTAINS PSF-EXTRACTED SOURCE POSITION"
    HALO = 1 << 12, "HALO FROM BRIGHT SOURCE"

    @classmethod
    def legend_cards(cls) -> list[fits.Card]:
        """``BIT00``-``BIT15`` header cards exactly as in a real mskimg (13-15 reserved)."""
        return bits_legend_cards(cls, nbits=16, reserved="RESERVED FOR FUTURE USE")


# every bit but the two informational ones (source footprints): the "bad pixel" selection
MaskBits.BAD = MaskBits(8191 & ~int(MaskBits.SOURCE) & ~int(MaskBits.PSF_SOURCE))


class InfoBits(_LegendFlag):
    """The ``INFOBITS`` quality word of a ZTF science image (bits 0-21, plus 2**25 "cloudy").

    A product runner sets these instead of crashing: bit 12 means "astrometric calibration not
    possible", bit 8 "photometric calibration not possible", and so on. ``InfoBits.CLOUDY`` is the
    operational photometric-quality flag users cut on (``infobits < 33554432``).

    Examples
    --------
    >>> from ztfsds.products import InfoBits
    >>> int(InfoBits.ASTROM_FAILED | InfoBits.FEW_ASTROM_MATCHES)
    20480
    >>> InfoBits.ASTROM_FAILED.legend
    'ASTROMETRIC CALIBRATION NOT POSSIBLE'
    """

    HIGH_BACKGROUND = 1 << 0, 'MEDIAN BACKGROUND LEVEL is >  4000.0 DN'
    HIGH_NOISE = 1 << 1, 'ROBUST PIXEL NOISE (RMS) is > 100.0 DN'
    MANY_SATURATED = 1 << 2, 'PERCENT OF SATURATED PIXELS is > 50.0%'
    BAD_SEEING = 1 << 3, 'IMAGE SEEING (FWHM) is > 5.0"'
    LOW_MAGLIM_PSF = 1 << 4, 'MAGLIM FROM PSF CATALOG UNCERTS is < 17.5 mag'
    LOW_MAGLIM_EMPIRICAL = 1 << 5, 'MAGLIM FROM EMPIRICAL FORMULA is < 17.5 mag'
    FEW_PSF_SOURCES = 1 << 6, 'NUMBER OF PSF CATALOG SOURCES is < 10'
    FEW_SEX_SOURCES = 1 << 7, 'NUMBER OF SEXTRACTOR CAT SOURCES is < 20'
    PHOTCAL_FAILED = 1 << 8, 'PHOTOMETRIC CALIBRATION NOT POSSIBLE'
    FEW_PHOTCAL_CALIBRATORS = 1 << 9, 'NUMBER OF PHOTOMETRIC CALIBRATORS is < 30'
    FEW_PHOTCAL_MATCHES = 1 << 10, 'NUMBER OF MATCHES FOR PHOTOMETRIC CAL < 5'
    HIGH_PHOTCAL_RMS = 1 << 11, 'RMS in PHOTCAL RESIDUALS (ZPs) is > 0.2 mag'
    ASTROM_FAILED = 1 << 12, 'ASTROMETRIC CALIBRATION NOT POSSIBLE'
    LOW_ASTROM_REFCAT_PCT = 1 << 13, 'PCT OF REF-CAT MATCHES FOR ASTROM is < 0%'
    FEW_ASTROM_MATCHES = 1 << 14, 'NUMBER OF MATCHES FOR ASTROM CAL is < 100'
    FEW_INGRID_ASTROM_MATCHES = 1 << 15, 'MIN NUM OF IN-GRID MATCHES FOR ASTROM is < 5'
    PIXSCALE_OUT_OF_RANGE = 1 << 16, 'REL-PIXEL SCALE OUT OF RANGE: -0.20% - 2.00%'
    ASTROM_CHI2_CHANGE = 1 << 17, 'PCT CHANGE IN SCAMP CHI-SQUARE is > 0.0%'
    HIGH_ASTROM_CHI2 = 1 << 18, 'CHI-SQUARE FROM SECOND PASS SCAMP is > 55'
    HIGH_INGRID_ASTROM_RESID = 1 << 19, 'MAX IN-GRID MEDIAN ASTROM RESID is > 0.7"'
    PSF_FAILED = 1 << 20, 'PSF CREATION (HENCE PSF-FIT PHOT) NOT POSSIBLE'
    LOW_ASTROM_DETECTED_PCT = 1 << 21, 'PCT OF DETECTED MATCHES FOR ASTROM is < 50%'
    CLOUDY = 1 << 25, 'PHOTOMETRIC QUALITY: CLOUDY/POOR TRANSPARENCY'

    @classmethod
    def legend_cards(cls) -> list[fits.Card]:
        """``BIT00``-``BIT21`` header cards exactly as in a real sciimg, plus ``BIT25``."""
        return bits_legend_cards(cls, nbits=26)


def bits_legend_cards(flag: type[_LegendFlag], *, nbits: int, reserved: str | None = None) -> list[fits.Card]:
    """Header cards ``BITnn = nn / legend`` describing the members of a bit flag.

    Parameters
    ----------
    flag : MaskBits or InfoBits
        The flag class.
    nbits : int
        Bits 0 to ``nbits - 1`` are considered.
    reserved : str, optional
        Legend for bits without a member; such bits are skipped when None.

    Returns
    -------
    list of `astropy.io.fits.Card`
    """
    members = flag._single_bits()
    cards = []
    for bit in range(nbits):
        member = members.get(1 << bit)
        if member is not None:
            legend = member.legend
        elif reserved is not None:
            legend = reserved
        else:
            continue
        cards.append(fits.Card(f"BIT{bit:02d}", bit, legend))
    return cards
