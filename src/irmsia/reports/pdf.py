"""A printable A4 PDF of a diagnostic report, built with fpdf2.

``build_pdf(report)`` returns the PDF bytes: title, report id, a status banner (preliminary,
final with its signer, or rejected), the study block, the sign-off, one section per image
(thumbnail, risk score, suggested diagnosis, findings, label probabilities, recommendations,
narrative, provenance), the AI disclaimer, and on every page a footer with the report id,
the ledger hash and the page number.

Text is set in DejaVu Sans, shipped in ``irmsia/reports/fonts`` (Bitstream Vera licence), so
Latin, Greek and Cyrillic text renders on any machine; a character the font lacks prints
as U+FFFD instead of being dropped with a log line that would quote it. The output is a
pure function of the report: its creation date is the report's ``created_at``, so the same
report always gives the same bytes.
"""

from __future__ import annotations

import io
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from fpdf import FPDF, FontFace
from fpdf.enums import TableBordersLayout, TableCellFillMode, VAlign, XPos, YPos
from fpdf.fonts import CoreFont, TTFFont

from irmsia.errors import InvalidRequest
from irmsia.reports.model import (
    DISCLAIMER,
    SIMULATED_NOTE,
    UNSIGNED_NOTE,
    ImageResult,
    Report,
    ReportStatus,
    Severity,
    SignOffAction,
    format_time,
    status_banner,
)

__all__ = ["PdfFonts", "build_pdf", "bundled_fonts"]


_FAMILY = "dejavu"
_MARGIN = 15.0
_FOOTER_SPACE = 16.0
_THUMB_MAX = 55.0  # mm, the longer side of a thumbnail
_REPLACEMENT = "\ufffd"

_INK = (33, 37, 41)
_MUTED = (108, 117, 125)
_RULE = (206, 212, 218)
_HEADING_FILL = (233, 236, 239)
_BANNER = {
    ReportStatus.PRELIMINARY: ((255, 243, 205), (133, 100, 4)),
    ReportStatus.FINAL: ((212, 237, 218), (21, 87, 36)),
    ReportStatus.REJECTED: ((248, 215, 218), (114, 28, 36)),
}
_SEVERITY_INK = {
    Severity.NORMAL: (21, 87, 36),
    Severity.LOW: (12, 84, 96),
    Severity.MODERATE: (133, 100, 4),
    Severity.HIGH: (176, 42, 55),
    Severity.CRITICAL: (114, 28, 36),
}


@dataclass(frozen=True)
class PdfFonts:
    """The regular and bold TrueType files to set the report in (paths or package resources)."""

    regular: Path | Traversable
    bold: Path | Traversable


def bundled_fonts() -> PdfFonts:
    """DejaVu Sans regular and bold, shipped inside this package."""
    folder = resources.files(__package__ or "irmsia.reports").joinpath("fonts")
    return PdfFonts(regular=folder.joinpath("DejaVuSans.ttf"), bold=folder.joinpath("DejaVuSans-Bold.ttf"))


def build_pdf(report: Report, *, fonts: PdfFonts | None = None) -> bytes:
    """Render ``report`` as an A4 PDF and return its bytes.

    Raises InvalidRequest when the report has no image results or a thumbnail cannot be
    decoded. ``fonts`` defaults to the bundled DejaVu Sans.
    """
    if not report.images:
        raise InvalidRequest("a report needs at least one image result")
    fonts = fonts or bundled_fonts()
    with ExitStack() as stack:
        regular = stack.enter_context(resources.as_file(fonts.regular))
        bold = stack.enter_context(resources.as_file(fonts.bold))
        pdf = _ReportPdf(report, regular, bold)
        try:
            pdf.render()
            return bytes(pdf.output())
        finally:
            pdf.close_fonts()


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which PNG requires to come first."""
    if len(png) < 24 or png[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    width, height = struct.unpack(">II", png[16:24])
    if width == 0 or height == 0:
        raise ValueError("empty image")
    return width, height


def _charset(font: TTFFont | CoreFont) -> frozenset[int]:
    """The code points a TrueType face has glyphs for (core fonts are never added here)."""
    return frozenset(font.cmap) if isinstance(font, TTFFont) else frozenset(range(32, 256))


class _ReportPdf(FPDF):
    """One report's document: layout helpers plus the per-page footer."""

    def __init__(self, report: Report, regular: Path, bold: Path) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.report = report
        self.add_font(_FAMILY, "", str(regular))
        self.add_font(_FAMILY, "B", str(bold))
        # Only characters both faces can draw; anything else becomes U+FFFD (see _clean).
        self._charset = _charset(self.fonts[_FAMILY]) & _charset(self.fonts[_FAMILY + "B"])
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(auto=True, margin=_FOOTER_SPACE + 4)
        self.set_creation_date(report.created_at)
        self.set_title(f"Diagnostic report {report.report_id}")
        self.set_subject("AI-assisted diagnostic report")
        self.set_author("IRMSIA")
        self.set_creator("IRMSIA")
        self.set_lang("en")
        self.set_text_color(*_INK)
        self.set_draw_color(*_RULE)

    def close_fonts(self) -> None:
        """Close the font files; fpdf2 closes only those it embedded, and only in output()."""
        for font in self.fonts.values():
            if isinstance(font, TTFFont):
                font.close()

    # --- text helpers --------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        """Printable text: NFC, tabs as spaces, other controls dropped, unknown glyphs as U+FFFD."""
        out = []
        for char in unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\t", " "):
            if char == "\n" or ord(char) in self._charset:
                out.append(char)
            elif unicodedata.category(char)[0] != "C":
                out.append(_REPLACEMENT)
        return "".join(out)

    def _font(self, size: float, *, bold: bool = False) -> None:
        self.set_font(_FAMILY, "B" if bold else "", size)

    def _para(self, text: str, *, size: float = 9.5, bold: bool = False, height: float = 5.0) -> None:
        self._font(size, bold=bold)
        self.multi_cell(0, height, self._clean(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _heading(self, text: str, *, size: float = 12.0, space_before: float = 4.0, keep: float = 25) -> None:
        # Keep a heading with at least ``keep`` mm of what follows.
        if self.will_page_break(space_before + keep):
            self.add_page()
        else:
            self.ln(space_before)
        self._font(size, bold=True)
        self.cell(0, 7, self._clean(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*_RULE)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)

    def _label(self, text: str) -> None:
        # Keep a label with the first lines of its content.
        if self.will_page_break(20):
            self.add_page()
        self._font(9.5, bold=True)
        self.cell(0, 6, self._clean(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _key_values(self, rows: Iterable[tuple[str, str]], *, key_width: float = 45.0) -> None:
        self._font(9)
        with self.table(
            col_widths=(key_width, self.epw - key_width),
            width=self.epw,
            first_row_as_headings=False,
            align="LEFT",
            borders_layout=TableBordersLayout.HORIZONTAL_LINES,
            cell_fill_mode=TableCellFillMode.NONE,
            line_height=5,
            text_align="LEFT",
            v_align=VAlign.T,
            padding=(1, 2),
        ) as table:
            for key, value in rows:
                row = table.row()
                row.cell(self._clean(key), style=FontFace(emphasis="BOLD", color=_MUTED))
                row.cell(self._clean(value))

    def _grid(
        self,
        headings: Sequence[str],
        rows: Iterable[Sequence[str | tuple[str, FontFace]]],
        widths: Sequence[float],
    ) -> None:
        """A table under a heading row; a cell given as (text, FontFace) gets that style."""
        self._font(9)
        with self.table(
            col_widths=tuple(widths),
            width=self.epw,
            align="LEFT",
            borders_layout=TableBordersLayout.HORIZONTAL_LINES,
            headings_style=FontFace(emphasis="BOLD", fill_color=_HEADING_FILL),
            cell_fill_mode=TableCellFillMode.NONE,
            line_height=5,
            text_align="LEFT",
            v_align=VAlign.T,
            padding=(1, 2),
        ) as table:
            heading = table.row()
            for text in headings:
                heading.cell(self._clean(text))
            for values in rows:
                row = table.row()
                for value in values:
                    text, style = value if isinstance(value, tuple) else (value, None)
                    row.cell(self._clean(text), style=style)

    # --- page furniture ------------------------------------------------------------------

    def footer(self) -> None:
        """Report id, ledger registration and page number at the foot of every page."""
        report = self.report
        self.set_y(-_FOOTER_SPACE)
        self.set_draw_color(*_RULE)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)
        self._font(7)
        self.set_text_color(*_MUTED)
        ledger = (
            f"Ledger #{report.ledger_index if report.ledger_index is not None else '?'} · "
            f"SHA-256 {report.ledger_hash}"
            if report.ledger_hash
            else "Ledger: not yet registered"
        )
        top = self.get_y()
        self.cell(
            self.epw * 0.8, 3.5, self._clean(f"Report {report.report_id} · {report.status.value.upper()}")
        )
        self.cell(0, 3.5, f"Page {self.page_no()} of {{nb}}", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 3.5, self._clean(ledger), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_y(top)
        self.set_text_color(*_INK)

    # --- sections ------------------------------------------------------------------------

    def render(self) -> None:
        self.add_page()
        self._title()
        self._banner()
        self._study()
        self._sign_off()
        for number, image in enumerate(self.report.images, start=1):
            self._image(number, image)
        self._disclaimer()

    def _title(self) -> None:
        self._font(18, bold=True)
        self.cell(0, 10, "Diagnostic report", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self._font(9)
        self.set_text_color(*_MUTED)
        self.cell(
            0,
            5,
            self._clean(f"Report {self.report.report_id} · created {format_time(self.report.created_at)}"),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        self.set_text_color(*_INK)
        self.ln(3)

    def _banner(self) -> None:
        fill, ink = _BANNER[self.report.status]
        self.set_fill_color(*fill)
        self.set_text_color(*ink)
        self.set_draw_color(*ink)
        self._font(11, bold=True)
        self.multi_cell(
            0,
            9,
            self._clean(status_banner(self.report)),
            border=1,
            fill=True,
            align="C",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        self.set_text_color(*_INK)
        self.set_draw_color(*_RULE)
        self.set_fill_color(255, 255, 255)
        if self.report.simulated:
            self.ln(1)
            self._font(9, bold=True)
            self.set_text_color(*_BANNER[ReportStatus.REJECTED][1])
            self.cell(
                0,
                5,
                "Contains SIMULATED results (demonstration provider)",
                align="C",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
            self.set_text_color(*_INK)

    def _study(self) -> None:
        study = self.report.study
        self._heading("Study")
        self._key_values(
            [
                ("Patient (pseudonym)", self.report.patient_pseudonym),
                ("Study", study.study_id),
                ("Study date (shifted)", study.study_date.isoformat() if study.study_date else "—"),
                ("Modalities", ", ".join(study.modalities) or "—"),
                ("Accession (pseudonym)", study.accession_pseudonym or "—"),
                ("Study UID (de-identified)", study.study_instance_uid),
                ("Images analysed", str(len(self.report.images))),
            ]
        )

    def _sign_off(self) -> None:
        sign_off = self.report.sign_off
        if sign_off is None:
            return
        self._heading("Clinical sign-off")
        decision = {
            SignOffAction.CONFIRMED: "Confirmed as proposed",
            SignOffAction.EDITED: "Confirmed with edits",
            SignOffAction.REJECTED: "Rejected",
        }[sign_off.action]
        rows = [
            ("Decision", decision),
            ("Signed by", f"{sign_off.username} (user {sign_off.user_id})"),
            ("Signed on", format_time(sign_off.signed_at)),
        ]
        if sign_off.edited_diagnosis:
            rows.append(("Clinician's diagnosis", sign_off.edited_diagnosis))
        if sign_off.comment:
            rows.append(("Comment", sign_off.comment))
        self._key_values(rows)
        if sign_off.amendments:
            self.ln(2)
            self._label("Changes to the AI findings")
            for amendment in sign_off.amendments:
                self._para(f"•  {amendment}", size=9)
        if sign_off.edited_narrative:
            self.ln(2)
            self._label("Clinician's conclusion")
            self._para(sign_off.edited_narrative)

    def _image(self, number: int, image: ImageResult) -> None:
        title = f"Image {number} of {len(self.report.images)} · {image.image_id}"
        if image.simulated:
            title += " · SIMULATED"
        self._heading(title)
        self._summary(image)
        if image.findings:
            self._label("Findings")
            self._grid(
                ("Finding", "Location", "Severity", "Confidence"),
                (
                    (
                        finding.description,
                        finding.location or "—",
                        (
                            finding.severity.value,
                            FontFace(emphasis="BOLD", color=_SEVERITY_INK[finding.severity]),
                        ),
                        f"{finding.confidence:.0%}",
                    )
                    for finding in image.findings
                ),
                (self.epw * 0.44, self.epw * 0.26, self.epw * 0.15, self.epw * 0.15),
            )
        else:
            self._para("No findings reported.", size=9)
        if image.probabilities:
            self.ln(2)
            self._label("Label probabilities")
            ranked = sorted(image.probabilities.items(), key=lambda item: (-item[1], item[0]))
            self._grid(
                ("Label", "Probability"),
                ((label, f"{probability:.1%}") for label, probability in ranked),
                (self.epw * 0.7, self.epw * 0.3),
            )
        if image.recommendations:
            self.ln(2)
            self._label("Recommendations")
            for recommendation in image.recommendations:
                self._para(f"•  {recommendation}", size=9)
        if image.narrative:
            self.ln(2)
            self._label("Narrative")
            self._para(image.narrative, size=9)
        self.ln(2)
        self._label("Provenance")
        provenance = image.provenance
        self._key_values(
            [
                ("Provider", provenance.provider),
                ("Model", provenance.model),
                ("Version", provenance.version),
                ("Weights SHA-256", provenance.weights_sha256 or "—"),
                ("Simulated", "yes" if image.simulated else "no"),
            ]
        )

    def _summary(self, image: ImageResult) -> None:
        """Thumbnail on the left, the headline numbers beside it."""
        thumb_w = thumb_h = 0.0
        if image.thumbnail_png is not None:
            try:
                width, height = _png_size(image.thumbnail_png)
            except ValueError:
                raise InvalidRequest(f"thumbnail of image {image.image_id} is not a readable PNG") from None
            scale = _THUMB_MAX / max(width, height)
            thumb_w, thumb_h = width * scale, height * scale
            if self.will_page_break(thumb_h + 2):
                self.add_page()
        top = self.get_y()
        if image.thumbnail_png is not None:
            try:
                self.image(io.BytesIO(image.thumbnail_png), x=self.l_margin, y=top, w=thumb_w, h=thumb_h)
            except (OSError, ValueError, SyntaxError):
                # Pillow reports corrupt PNG data as OSError/ValueError/SyntaxError.
                raise InvalidRequest(f"thumbnail of image {image.image_id} is not a readable PNG") from None
            self.set_draw_color(*_RULE)
            self.rect(self.l_margin, top, thumb_w, thumb_h)
        left = self.l_margin
        if thumb_w:
            self.set_left_margin(left + thumb_w + 5)
            self.set_xy(self.l_margin, top)
        try:
            self._key_values(
                [
                    ("Risk score", f"{image.risk_score:g} / 100"),
                    ("Suggested diagnosis", image.suggested_diagnosis or "—"),
                    ("Series UID", image.series_instance_uid),
                    ("SOP instance UID", image.sop_instance_uid),
                    ("SOP class UID", image.sop_class_uid),
                ],
                key_width=38,
            )
        finally:
            self.set_left_margin(left)
        self.set_xy(left, max(self.get_y(), top + thumb_h) + 3)

    def _disclaimer(self) -> None:
        self._heading("About this report", keep=45)
        text = DISCLAIMER
        if not self.report.is_signed:
            text += " " + UNSIGNED_NOTE
        self._para(text, size=9)
        if self.report.simulated:
            self.ln(1)
            self._para(SIMULATED_NOTE, size=9, bold=True)
