"""Evaluations (Part 12): the owner of a cleaning rates the cleaner whose offer they accepted."""

from typing import Annotated

from pydantic import BeforeValidator, Field, Strict

from app.models.cleaning import CleaningPublic
from app.models.core import CoreModel, DateTimeModelMixin, FormBool, Text, integral_float, number_text
from app.models.user import UserPublic

# 0 to 5, as a number or as a form's text ("4"); never a boolean, and never 4.5 cut to 4. The
# text pattern spells the range itself, so that text the document allows is never refused.
Rating = Annotated[
    int,
    Strict(),
    Field(ge=0, le=5),
    BeforeValidator(integral_float),
    *number_text({"type": "integer", "minimum": 0, "maximum": 5}, r"\+?0{0,2}[0-5]", int),
]
Headline = Annotated[Text, Field(max_length=200)]
Comment = Annotated[Text, Field(max_length=5000)]


class EvaluationBase(CoreModel):
    no_show: FormBool = False
    headline: Headline | None = None
    comment: Comment | None = None
    professionalism: Rating | None = None
    completeness: Rating | None = None
    efficiency: Rating | None = None
    overall_rating: Rating | None = None


class EvaluationCreate(EvaluationBase):
    overall_rating: Rating


class EvaluationUpdate(EvaluationBase):
    pass


class EvaluationInDB(DateTimeModelMixin, EvaluationBase):
    cleaner_id: int
    cleaning_id: int


class EvaluationPublic(EvaluationInDB):
    owner: UserPublic | int | None = None  # the user first: see CleaningPublic.owner
    cleaner: UserPublic | None = None
    cleaning: CleaningPublic | None = None


class EvaluationAggregate(CoreModel):
    """A cleaner's ratings summed up. With no evaluations yet the counts are 0 and the averages,
    minimum and maximum are null: there is nothing to average."""

    avg_professionalism: Annotated[float, Field(ge=0, le=5)] | None = None
    avg_completeness: Annotated[float, Field(ge=0, le=5)] | None = None
    avg_efficiency: Annotated[float, Field(ge=0, le=5)] | None = None
    avg_overall_rating: Annotated[float, Field(ge=0, le=5)] | None = None
    max_overall_rating: Rating | None = None
    min_overall_rating: Rating | None = None
    one_stars: Annotated[int, Field(ge=0)] = 0
    two_stars: Annotated[int, Field(ge=0)] = 0
    three_stars: Annotated[int, Field(ge=0)] = 0
    four_stars: Annotated[int, Field(ge=0)] = 0
    five_stars: Annotated[int, Field(ge=0)] = 0
    total_evaluations: Annotated[int, Field(ge=0)] = 0
    total_no_show: Annotated[int, Field(ge=0)] = 0
