"""MaskBits and InfoBits against the legends of the real IPAC headers."""


import pytest
from astropy.io import fits

from ztfsds.products import InfoBits, MaskBits

# BITnn cards copied from the real headers of ztf_20200924431759_000655_zr_c13_o_q3_{mskimg,sciimg}.fits
REAL_MASK_LEGEND = """\
BIT00   =                    0 / AIRCRAFT/SATELLITE TRACK
BIT01   =                    1 / CONTAINS SEXTRACTOR DETECTION
BIT02   =                    2 / LOW RESPONSIVITY
BIT03   =                    3 / HIGH RESPONSIVITY
BIT04   =                    4 / NOISY
BIT05   =                    5 / GHOST FROM BRIGHT SOURCE
BIT06   =                    6 / POSSIBLE GHOST FROM CHARGE SPILLAGE
BIT07   =                    7 / PIXEL SPIKE (POSSIBLE RAD HIT)
BIT08   =                    8 / SATURATED
BIT09   =                    9 / DEAD (UNRESPONSIVE)
BIT10   =                   10 / NAN (not a number)
BIT11   =                   11 / CONTAINS PSF-EXTRACTED SOURCE POSITION
BIT12   =                   12 / HALO FROM BRIGHT SOURCE
BIT13   =                   13 / RESERVED FOR FUTURE USE
BIT14   =                   14 / RESERVED FOR FUTURE USE
BIT15   =                   15 / RESERVED FOR FUTURE USE"""

REAL_INFO_LEGEND = """\
BIT00   =                    0 / MEDIAN BACKGROUND LEVEL is >  4000.0 DN
BIT01   =                    1 / ROBUST PIXEL NOISE (RMS) is > 100.0 DN
BIT02   =                    2 / PERCENT OF SATURATED PIXELS is > 50.0%
BIT03   =                    3 / IMAGE SEEING (FWHM) is > 5.0"
BIT04   =                    4 / MAGLIM FROM PSF CATALOG UNCERTS is < 17.5 mag
BIT05   =                    5 / MAGLIM FROM EMPIRICAL FORMULA is < 17.5 mag
BIT06   =                    6 / NUMBER OF PSF CATALOG SOURCES is < 10
BIT07   =                    7 / NUMBER OF SEXTRACTOR CAT SOURCES is < 20
BIT08   =                    8 / PHOTOMETRIC CALIBRATION NOT POSSIBLE
BIT09   =                    9 / NUMBER OF PHOTOMETRIC CALIBRATORS is < 30
BIT10   =                   10 / NUMBER OF MATCHES FOR PHOTOMETRIC CAL < 5
BIT11   =                   11 / RMS in PHOTCAL RESIDUALS (ZPs) is > 0.2 mag
BIT12   =                   12 / ASTROMETRIC CALIBRATION NOT POSSIBLE
BIT13   =                   13 / PCT OF REF-CAT MATCHES FOR ASTROM is < 0%
BIT14   =                   14 / NUMBER OF MATCHES FOR ASTROM CAL is < 100
BIT15   =                   15 / MIN NUM OF IN-GRID MATCHES FOR ASTROM is < 5
BIT16   =                   16 / REL-PIXEL SCALE OUT OF RANGE: -0.20% - 2.00%
BIT17   =                   17 / PCT CHANGE IN SCAMP CHI-SQUARE is > 0.0%
BIT18   =                   18 / CHI-SQUARE FROM SECOND PASS SCAMP is > 55
BIT19   =                   19 / MAX IN-GRID MEDIAN ASTROM RESID is > 0.7"
BIT20   =                   20 / PSF CREATION (HENCE PSF-FIT PHOT) NOT POSSIBLE
BIT21   =                   21 / PCT OF DETECTED MATCHES FOR ASTROM is < 50%"""


def _legend(text):
    return [(c.keyword, c.value, c.comment) for c in (fits.Card.fromstring(line) for line in text.splitlines())]


def test_mask_bits_match_real_header():
    ours = [(c.keyword, c.value, c.comment) for c in MaskBits.legend_cards()]
    assert ours == _legend(REAL_MASK_LEGEND)
    assert [int(m) for m in MaskBits] == [1 << b for b in range(13)]
    assert int(MaskBits.BAD) == 6141  # what users AND with to reject pixels
    assert not MaskBits.BAD & MaskBits.SOURCE and MaskBits.BAD & MaskBits.SATURATED


def test_info_bits_match_real_header():
    ours = [(c.keyword, c.value, c.comment) for c in InfoBits.legend_cards()]
    assert ours[:22] == _legend(REAL_INFO_LEGEND)
    assert ours[22][:2] == ("BIT25", 25)
    assert int(InfoBits.CLOUDY) == 33554432
    assert InfoBits.describe(InfoBits.ASTROM_FAILED | InfoBits.CLOUDY | (1 << 23)) == [
        "ASTROM_FAILED", "BIT23", "CLOUDY"]


def test_cards_fit_a_header():
    header = fits.Header()
    header.extend(InfoBits.legend_cards())
    assert header["BIT12"] == 12
    assert header.comments["BIT20"] == "PSF CREATION (HENCE PSF-FIT PHOT) NOT POSSIBLE"


@pytest.mark.parametrize("flag", [MaskBits, InfoBits])
def test_single_bit_members_are_unique(flag):
    values = [int(m) for m in flag]
    assert len(values) == len(set(values))
