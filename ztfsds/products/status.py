"""`ProductStatus`: what a product runner returns (and what the night runner records)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .bits import InfoBits

__all__ = ["ProductStatus"]


@dataclasses.dataclass
class ProductStatus:
    """Outcome of one stage on one item (a quadrant-exposure, a reference, a night).

    Parameters
    ----------
    stage : str
        Stage name ('calib', 'astrom', ...).
    key : str
        The product (file name) the stage worked on.
    ok : bool
        True when the products were written and are usable.
    infobits : int
        INFOBITS set by the stage (0 when all quality tests passed).
    message : str
        One line for the night log: what failed and why, or a summary.
    outputs : list of pathlib.Path
        Products written.
    elapsed : float
        Wall time of the stage in seconds.
    """

    stage: str
    key: str
    ok: bool = True
    infobits: int = 0
    message: str = ""
    outputs: list[Path] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0

    @property
    def flags(self) -> list[str]:
        """Names of the INFOBITS set."""
        return InfoBits.describe(self.infobits)

    def __str__(self) -> str:
        state = "ok" if self.ok else "FAILED"
        bits = f" infobits={self.infobits} ({','.join(self.flags)})" if self.infobits else ""
        return f"[{self.stage}] {self.key}: {state}{bits} {self.message}".rstrip()
