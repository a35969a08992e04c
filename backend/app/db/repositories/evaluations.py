import asyncpg
from databases import Database

from app.db.errors import OfferNotAcceptedError
from app.db.repositories.base import BaseRepository, as_dict
from app.db.repositories.offers import OffersRepository
from app.models.cleaning import AnyCleaning
from app.models.evaluation import EvaluationAggregate, EvaluationCreate, EvaluationInDB
from app.models.user import AnyUser

EVALUATION_COLUMNS = (
    "cleaning_id, cleaner_id, no_show, headline, comment, professionalism, completeness, efficiency, "
    "overall_rating, created_at, updated_at"
)

CREATE_EVALUATION_QUERY = f"""
    INSERT INTO cleaning_to_cleaner_evaluations (
        cleaning_id, cleaner_id, no_show, headline, comment, professionalism, completeness, efficiency, overall_rating
    )
    VALUES (
        :cleaning_id, :cleaner_id, :no_show, :headline, :comment,
        :professionalism, :completeness, :efficiency, :overall_rating
    )
    RETURNING {EVALUATION_COLUMNS};
"""

GET_CLEANER_EVALUATION_FOR_CLEANING_QUERY = f"""
    SELECT {EVALUATION_COLUMNS}
    FROM cleaning_to_cleaner_evaluations
    WHERE cleaning_id = :cleaning_id AND cleaner_id = :cleaner_id;
"""

LIST_EVALUATIONS_FOR_CLEANER_QUERY = f"""
    SELECT {EVALUATION_COLUMNS}
    FROM cleaning_to_cleaner_evaluations
    WHERE cleaner_id = :cleaner_id
    ORDER BY created_at, cleaning_id;
"""

# One query. The averages are taken over float8, not numeric: a sum of small integers is exact in
# float8 and the division is correctly rounded, so each average is the double nearest the true
# mean, the value any client computes (numeric's AVG rounds to a decimal first, and converting
# that to a double is off in the last digit for some counts). AVG ignores unrated (NULL) fields.
GET_CLEANER_AGGREGATES_QUERY = """
    SELECT
        AVG(professionalism::float8) AS avg_professionalism,
        AVG(completeness::float8) AS avg_completeness,
        AVG(efficiency::float8) AS avg_efficiency,
        AVG(overall_rating::float8) AS avg_overall_rating,
        MIN(overall_rating) AS min_overall_rating,
        MAX(overall_rating) AS max_overall_rating,
        COUNT(*) FILTER (WHERE overall_rating = 1) AS one_stars,
        COUNT(*) FILTER (WHERE overall_rating = 2) AS two_stars,
        COUNT(*) FILTER (WHERE overall_rating = 3) AS three_stars,
        COUNT(*) FILTER (WHERE overall_rating = 4) AS four_stars,
        COUNT(*) FILTER (WHERE overall_rating = 5) AS five_stars,
        COUNT(*) AS total_evaluations,
        COUNT(*) FILTER (WHERE no_show) AS total_no_show
    FROM cleaning_to_cleaner_evaluations
    WHERE cleaner_id = :cleaner_id;
"""


class EvaluationsRepository(BaseRepository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.offers_repo = OffersRepository(db)

    async def create_evaluation_for_cleaner(
        self, *, evaluation_create: EvaluationCreate, cleaning: AnyCleaning, cleaner: AnyUser
    ) -> EvaluationInDB:
        """Evaluate the cleaner whose offer was accepted, and mark that offer completed, at once.

        OfferNotAcceptedError if the offer is not (or no longer) accepted: already evaluated,
        cancelled, or never accepted. Two evaluations at once: the first locks the offer, and the
        second finds it completed. The INSERT also adds the evaluation to the cleaner's row of
        `cleaner_stats` (a trigger, revision 4c8e1a6d9f27), in this transaction: the list of
        cleaners (app/db/repositories/cleaners.py) is never behind it.
        """
        values = {**evaluation_create.model_dump(), "cleaning_id": cleaning.id, "cleaner_id": cleaner.id}
        try:
            async with self.db.transaction():
                if await self.offers_repo.mark_offer_completed(cleaning=cleaning, cleaner=cleaner) is None:
                    raise OfferNotAcceptedError
                record = await self.db.fetch_one(query=CREATE_EVALUATION_QUERY, values=values)
        except asyncpg.UniqueViolationError as exc:  # the primary key: one evaluation per offer
            raise OfferNotAcceptedError from exc
        assert record is not None  # INSERT ... RETURNING always returns the row
        return EvaluationInDB.model_validate(as_dict(record))

    async def get_cleaner_evaluation_for_cleaning(
        self, *, cleaning: AnyCleaning, cleaner: AnyUser
    ) -> EvaluationInDB | None:
        values = {"cleaning_id": cleaning.id, "cleaner_id": cleaner.id}
        record = await self.db.fetch_one(query=GET_CLEANER_EVALUATION_FOR_CLEANING_QUERY, values=values)
        return EvaluationInDB.model_validate(as_dict(record)) if record else None

    async def list_evaluations_for_cleaner(self, *, cleaner: AnyUser) -> list[EvaluationInDB]:
        records = await self.db.fetch_all(query=LIST_EVALUATIONS_FOR_CLEANER_QUERY, values={"cleaner_id": cleaner.id})
        return [EvaluationInDB.model_validate(as_dict(record)) for record in records]

    async def get_cleaner_aggregates(self, *, cleaner: AnyUser) -> EvaluationAggregate:
        """The cleaner's stats; with no evaluations, zero counts and null averages."""
        record = await self.db.fetch_one(query=GET_CLEANER_AGGREGATES_QUERY, values={"cleaner_id": cleaner.id})
        assert record is not None  # an aggregate without GROUP BY always returns one row
        return EvaluationAggregate.model_validate(as_dict(record))
