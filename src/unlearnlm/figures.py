"""Figures: matplotlib without a display, and a figure as PNG bytes (every plot unlearnlm draws)."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(figure, dpi: int = 120) -> bytes:
    """``figure`` as PNG bytes; the figure is closed (its memory freed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()
