"""Per-study AI status and risk, as SQL: for the worklist's filters, sort and column.

A study's AI status, from the newest analysis of each of its stored images and its latest
report sign-off:

* ``signed``: a radiologist confirmed, edited or rejected the study's report;
* ``analysed``: not signed, and the newest result of at least one image is ``ok`` (there
  is a preliminary report to sign);
* ``error``: analysed, but no image's newest result is ``ok`` (every analysis failed);
* ``not_analysed``: no image of the study has been analysed.

Its risk is the highest ``risk_score`` of those newest ``ok`` results (None without one).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from irmsia.db.analysis import Analysis, ReportSignoff
from irmsia.db.imaging import Instance, Study

STATUSES = ("not_analysed", "analysed", "error", "signed")


@dataclass(frozen=True)
class StudyAI:
    """One study's AI summary: status, highest risk, image counts and the sign-off decision."""

    study_id: str
    status: str  # one of STATUSES
    risk: int | None
    analysed: int  # images with an analysis (their newest one counted)
    failed: int  # of those, images whose newest analysis is an error
    decision: str | None  # confirmed | edited | rejected, once signed


def _results(study_ids: Collection[str] | None) -> Subquery:
    """One row per study with an analysed image: highest risk, images ok and failed."""
    rank = (
        func.row_number()
        .over(partition_by=Analysis.image_id, order_by=(Analysis.created_at.desc(), Analysis.id.desc()))
        .label("rank")
    )
    newest: Select[Any] = (
        select(Analysis.study_id, Analysis.status, Analysis.risk_score, rank)
        .join(Instance, Instance.id == Analysis.image_id)
        .where(Instance.status == "stored")
    )
    if study_ids is not None:
        newest = newest.where(Analysis.study_id.in_(study_ids))
    ranked = newest.subquery("newest")
    is_ok = ranked.c.status == "ok"
    return (
        select(
            ranked.c.study_id.label("study_id"),
            func.max(case((is_ok, ranked.c.risk_score))).label("risk"),
            func.count().label("analysed"),
            func.sum(case((is_ok, 0), else_=1)).label("failed"),
        )
        .where(ranked.c.rank == 1)
        .group_by(ranked.c.study_id)
        .subquery("ai_results")
    )


def _signoffs(study_ids: Collection[str] | None) -> Subquery:
    """The latest sign-off decision of each signed study."""
    rank = (
        func.row_number()
        .over(
            partition_by=ReportSignoff.study_id,
            order_by=(ReportSignoff.created_at.desc(), ReportSignoff.id.desc()),
        )
        .label("rank")
    )
    query: Select[Any] = select(ReportSignoff.study_id, ReportSignoff.decision, rank)
    if study_ids is not None:
        query = query.where(ReportSignoff.study_id.in_(study_ids))
    ranked = query.subquery("ranked_signoffs")
    return (
        select(ranked.c.study_id.label("study_id"), ranked.c.decision.label("decision"))
        .where(ranked.c.rank == 1)
        .subquery("ai_signoffs")
    )


@dataclass(frozen=True)
class Summary:
    """The summary subqueries and the status/risk expressions over them, for outer joins."""

    results: Subquery
    signoffs: Subquery

    @property
    def status(self) -> ColumnElement[str]:
        ok_images = self.results.c.analysed - self.results.c.failed
        return case(
            (self.signoffs.c.decision.is_not(None), "signed"),
            (ok_images > 0, "analysed"),
            (self.results.c.analysed > 0, "error"),
            else_="not_analysed",
        )

    @property
    def risk(self) -> ColumnElement[Any]:
        return self.results.c.risk


def summary(study_ids: Collection[str] | None = None) -> Summary:
    """The subqueries to outer-join on ``Study.id`` (``join_on``), for all studies or some."""
    return Summary(_results(study_ids), _signoffs(study_ids))


def join_on(
    query: Select[Any], study_id: ColumnElement[str] | InstrumentedAttribute[str], found: Summary
) -> Select[Any]:
    """``query`` outer-joined with the summary on ``study_id``."""
    return query.outerjoin(found.results, found.results.c.study_id == study_id).outerjoin(
        found.signoffs, found.signoffs.c.study_id == study_id
    )


def study_summaries(session: Session, study_ids: Collection[str]) -> dict[str, StudyAI]:
    """The AI summary of each of ``study_ids`` that exists (never analysed: ``not_analysed``)."""
    if not study_ids:
        return {}
    ids = list(study_ids)
    found = summary(ids)
    query = join_on(
        select(
            Study.id,
            found.status,
            found.risk,
            found.results.c.analysed,
            found.results.c.failed,
            found.signoffs.c.decision,
        ).where(Study.id.in_(ids)),
        Study.id,
        found,
    )
    return {
        row[0]: StudyAI(row[0], row[1], row[2], int(row[3] or 0), int(row[4] or 0), row[5])
        for row in session.execute(query).all()
    }
