"""Diagnostic reports: one ``Report`` model and pure builders for PDF, DICOM SR and FHIR.

Import the builders from their modules (``irmsia.reports.pdf.build_pdf``,
``irmsia.reports.sr.build_sr``, ``irmsia.reports.fhir.build_fhir_bundle``): importing this
package loads only the model, not fpdf2 or highdicom. Every builder takes a ``Report`` and
returns bytes or JSON-compatible data, reads no clock and touches no file except the
bundled fonts; an unusable report raises ``irmsia.errors.InvalidRequest``.
"""

from __future__ import annotations

from irmsia.reports.model import (
    Finding,
    ImageResult,
    Provenance,
    Report,
    ReportStatus,
    Severity,
    SignOff,
    SignOffAction,
    Study,
    parse_report,
)

__all__ = [
    "Finding",
    "ImageResult",
    "Provenance",
    "Report",
    "ReportStatus",
    "Severity",
    "SignOff",
    "SignOffAction",
    "Study",
    "parse_report",
]
